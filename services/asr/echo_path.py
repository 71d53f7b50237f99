"""One session's echo path: the character's audio as it plays (EchoReference), the
canceller that takes it out of the microphone, and whether there is any echo to take out.

The canceller runs on every frame (it keeps adapting), but its output is used only while
the microphone is found to hear the character: the microphone's last second correlates
with what played over the same second and up to MAX_LAG_S before (the echo is the
played audio, delayed and coloured by the room; the user's voice and the room's noise do
not correlate with it). With headphones nothing does, and the user is heard as the
microphone heard them: AEC3 filters and, until it has converged, suppresses the near end
too, which made a barge-in over a first reply ~250 ms slower for nothing. A level test
cannot tell: the user's own first syllables are as loud as an echo.
"""

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from services.asr.echo_canceller import EchoCanceller
from services.asr.echo_reference import EchoReference

RATE = 16_000
FRAME_S = 0.02
WINDOW_S = 1.0
"""The microphone audio each check looks at."""
MAX_LAG_S = 0.5
"""How late an echo may reach the microphone after playback's report (output buffers
and the room)."""
CHECK_EVERY = 10
"""Frames between two checks (0.2 s)."""
CORRELATED = 0.1
"""The normalized cross-correlation peak above which the microphone hears the character
(an echo: 0.3 to 0.9; noise or a voice over a second: under 0.05)."""
SOUNDING_DBFS = -40.0
"""Played audio quieter than this over the window says nothing either way."""
KEEP_S = 4.0
"""Once heard, the echo counts for this long without new evidence (the character's
pauses, the user talking over it)."""


@dataclass
class EchoPath:
    reference: EchoReference
    canceller: EchoCanceller
    echo_tail_s: float
    _sounded_at: float = -math.inf  # capture time of the latest frame the far end sounded
    _heard_at: float = -math.inf  # when the latest check found the echo
    _frames: int = 0
    _mic: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=round(WINDOW_S / FRAME_S)))
    _far: deque[np.ndarray] = field(
        default_factory=lambda: deque(maxlen=round((WINDOW_S + MAX_LAG_S) / FRAME_S))
    )

    def process(self, pcm: bytes, captured_at: float) -> tuple[bytes, bool]:
        """The frame as the VAD, the gate and Whisper should hear it, and whether that is
        the canceller's output."""
        far = self.reference.far_end(captured_at, len(pcm) // 2)
        cleaned = self.canceller.cancel(pcm, far)
        far_samples = np.frombuffer(far, dtype="<i2").astype(np.float32)
        if far_samples.any():
            self._sounded_at = captured_at
        self._mic.append(np.frombuffer(pcm, dtype="<i2").astype(np.float32))
        self._far.append(far_samples)
        self._frames += 1
        if self._frames % CHECK_EVERY == 0 and self._mic_correlates():
            self._heard_at = captured_at
        recent = captured_at - self._sounded_at <= self.echo_tail_s
        heard = captured_at - self._heard_at <= KEEP_S
        if recent and heard and not self.reference.lacks_audio(captured_at):
            return cleaned, True
        # Nothing to take out (quiet long enough, or no echo at this microphone), or an
        # echo the reference lacks (a session taken over mid-reply): the gate alone.
        return pcm, False

    def _mic_correlates(self) -> bool:
        """Does the microphone's last second follow what played (with some lag)?"""
        if len(self._mic) < self._mic.maxlen:  # type: ignore[operator]
            return False
        mic = np.concatenate(self._mic)
        far = np.concatenate(self._far)
        far_rms = float(np.sqrt(np.mean(far[-len(mic) :] ** 2))) / 32768
        if far_rms < 10 ** (SOUNDING_DBFS / 20) or not mic.any():
            return False
        # Cross-correlation by FFT: far is the window plus MAX_LAG_S before it, so lag k
        # (k samples late) pairs mic[n] with far[n + lags - k].
        lags = len(far) - len(mic)
        size = 1 << (len(far) + len(mic)).bit_length()
        spectrum = np.fft.rfft(far, size) * np.conj(np.fft.rfft(mic, size))
        correlation = np.fft.irfft(spectrum, size)[: lags + 1]
        # The far end's energy under each lag's stretch, for the normalization.
        energy = np.concatenate([[0.0], np.cumsum(far.astype(np.float64) ** 2)])
        stretch = energy[len(mic) : len(mic) + lags + 1] - energy[: lags + 1]
        norm = np.sqrt(np.maximum(stretch, 1e-9) * float(np.sum(mic.astype(np.float64) ** 2)))
        return float(np.max(np.abs(correlation) / norm)) >= CORRELATED
