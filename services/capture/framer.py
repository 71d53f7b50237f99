"""Any rate, any channel count -> 16 kHz mono s16le frames of a fixed length."""

import numpy as np
import soxr

from contracts.limits import AUDIO_SAMPLE_RATE


class Framer:
    def __init__(self, source_rate: int, frame_ms: int) -> None:
        self._resampler = (
            None
            if source_rate == AUDIO_SAMPLE_RATE
            else soxr.ResampleStream(source_rate, AUDIO_SAMPLE_RATE, 1, dtype="float32")
        )
        self._frame_samples = AUDIO_SAMPLE_RATE * frame_ms // 1000
        self._pending = np.zeros(0, dtype=np.int16)

    def push(self, block: np.ndarray, last: bool = False) -> list[bytes]:
        """A (frames, channels) float32 block in; whole frames out (the rest is kept)."""
        mono = block.mean(axis=1) if block.ndim == 2 else block
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono.astype(np.float32), last=last)
        # x 32768 undoes the sources' / 32768: 16 kHz mono s16le passes through bit-exact.
        samples = np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
        self._pending = np.concatenate([self._pending, samples])
        if last and len(self._pending) % self._frame_samples:
            pad = self._frame_samples - len(self._pending) % self._frame_samples
            self._pending = np.concatenate([self._pending, np.zeros(pad, dtype=np.int16)])
        whole = len(self._pending) - len(self._pending) % self._frame_samples
        frames = [
            self._pending[i : i + self._frame_samples].tobytes()
            for i in range(0, whole, self._frame_samples)
        ]
        self._pending = self._pending[whole:]
        return frames
