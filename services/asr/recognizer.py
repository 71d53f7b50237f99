"""Speech recognition behind one small interface, with faster-whisper as the default."""

import math
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.asr.settings import AsrSettings
from services.models.bundled import WHISPER_MODELS, whisper_model_dir

NO_SPEECH_PROBABILITY = 0.6
"""Whisper's own estimate that a segment holds no speech; such segments are dropped."""
GUESSING_LOGPROB = -1.0
"""Segments decoded with less confidence than this are dropped too (Whisper's own threshold
for a failed decode). On noise, a hotword lowers the no-speech estimate below 0.6, and
Whisper makes words up ('Mhm.', 'You') at -1.4 to -1.9; clear speech decodes at -0.1 to
-0.4."""


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    confidence: float


class SpeechRecognizer(Protocol):
    def transcribe(self, pcm: bytes) -> Transcript:
        """16 kHz mono s16le in, text out. Blocking: call it from a worker thread."""
        ...


def resolve_model(name: str) -> str:
    """A bundled model's checked directory, a local directory, or a name for the hub."""
    if name in WHISPER_MODELS:
        return str(whisper_model_dir(name))
    return name


class FasterWhisperRecognizer:
    def __init__(self, settings: AsrSettings) -> None:
        from faster_whisper import WhisperModel

        self.settings = settings
        self._model = WhisperModel(
            resolve_model(settings.model),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
        )
        # One transcription at a time: a second one would only halve the speed of both.
        self._lock = threading.Lock()

    def transcribe(self, pcm: bytes) -> Transcript:
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        with self._lock:
            segments, info = self._model.transcribe(
                audio,
                language=self.settings.language,
                beam_size=self.settings.beam_size,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
                hotwords=self.settings.hotwords or None,
            )
            kept = [
                s
                for s in segments
                if s.no_speech_prob < NO_SPEECH_PROBABILITY and s.avg_logprob > GUESSING_LOGPROB
            ]
        text = " ".join(s.text.strip() for s in kept).strip()
        if not kept:
            return Transcript("", info.language, 0.0)
        mean_logprob = sum(s.avg_logprob for s in kept) / len(kept)
        return Transcript(text, info.language, min(1.0, max(0.0, math.exp(mean_logprob))))
