"""Speech recognition behind one small interface, with faster-whisper as the default.

Whisper's encoder is built for 30 s windows, and faster-whisper pads every clip to one:
for a two-second question that padding is most of the work (tiny.en on two cores: ~280 ms
of a ~350 ms transcription). CTranslate2 accepts a shorter window, so with `short_window`
a clip shorter than `SHORT_WINDOW_S` is encoded in a shorter window: the clip plus
`WINDOW_MARGIN_S` of
silence, rounded up to a second. The margin matters: with 1-2 s, tiny.en heard "capital of
France?" as "capital of friends?" and dropped question marks; with 6 s it heard all the
bench's questions as the 30 s window does, in ~110 ms instead of ~350 ms; but even 20 s
did not hear the sample conversation's "capital of France" (it heard "friends"), so it is
off by default. Longer clips take faster-whisper's own path.
"""

import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from services.asr.settings import AsrSettings
from services.models.bundled import WHISPER_MODELS, whisper_model_dir

SHORT_WINDOW_S = 20.0
WINDOW_MARGIN_S = 6.0
"""Silence the short window keeps after the clip (see the module's docstring)."""
TOKENS_PER_S = 8
"""A cap on the tokens of a short clip (speech is ~3 a second): a decoder that loops on
a phrase stops there instead of at 448."""
FRAMES_PER_S = 100  # Whisper's features: one frame per 10 ms

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
        from faster_whisper.tokenizer import Tokenizer

        self.settings = settings
        self._model = WhisperModel(
            resolve_model(settings.model),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
        )
        # One transcription at a time: a second one would only halve the speed of both.
        self._lock = threading.Lock()
        self._tokenizer = (
            Tokenizer(
                self._model.hf_tokenizer,
                self._model.model.is_multilingual,
                task="transcribe",
                language=settings.language,
            )
            if settings.language or not self._model.model.is_multilingual
            else None  # detecting the language takes faster-whisper's own path
        )

    def transcribe(self, pcm: bytes) -> Transcript:
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        short = self.settings.short_window and audio.size / 16_000 < SHORT_WINDOW_S
        if self._tokenizer is not None and short:
            with self._lock:
                return self._transcribe_short(audio, self._tokenizer)
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

    def _transcribe_short(self, audio: np.ndarray, tokenizer: Any) -> Transcript:
        """One greedy decode over a window just longer than the clip (see the module's
        docstring); the same filters as the long path."""
        import ctranslate2
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        features = model.feature_extractor(audio)[:, :-1]
        frames = features.shape[1]
        window = min(
            model.feature_extractor.nb_max_frames,
            math.ceil((frames + WINDOW_MARGIN_S * FRAMES_PER_S) / FRAMES_PER_S) * FRAMES_PER_S,
        )
        batch = np.zeros((1, features.shape[0], window), dtype=np.float32)
        batch[0, :, : min(frames, window)] = features[:, :window]
        encoded = model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)
        prompt = model.get_prompt(
            tokenizer, [], without_timestamps=True, hotwords=self.settings.hotwords or None
        )
        seconds = audio.size / 16_000
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=self.settings.beam_size,
            return_scores=True,
            return_no_speech_prob=True,
            max_length=len(prompt) + 8 + math.ceil(seconds * TOKENS_PER_S),
            suppress_blank=True,
            # faster-whisper's own set: Whisper's non-speech tokens and the task tokens.
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1]) or []),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        logprob = float(result.scores[0])
        language = self.settings.language or "en"
        if result.no_speech_prob >= NO_SPEECH_PROBABILITY or logprob <= GUESSING_LOGPROB:
            return Transcript("", language, 0.0)
        text = without_loops(tokenizer.decode(tokens).strip())
        return Transcript(text, language, min(1.0, max(0.0, math.exp(logprob))) if text else 0.0)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def without_loops(text: str) -> str:
    """Whisper's loop, undone: a sentence said again right after itself, or a last
    fragment that starts the first sentence over ("Goodbye. Goodbye.", "The number is
    not answering. The"). Greedy decoding in a short window does this on short clean
    clips; faster-whisper's long path catches it by compression ratio and retries."""
    sentences = _SENTENCE_END.split(text)
    kept: list[str] = []
    for sentence in sentences:
        if kept and sentence.lower() == kept[-1].lower():
            continue
        kept.append(sentence)
    last = kept[-1]
    if len(kept) > 1 and last[-1:] not in ".!?" and kept[0].lower().startswith(last.lower()):
        kept.pop()
    return " ".join(kept)
