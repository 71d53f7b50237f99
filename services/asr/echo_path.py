"""One session's echo path: the character's audio as it plays (EchoReference), the
canceller that takes it out of the microphone, and whether there is any echo to take out.

The canceller runs on every frame (it keeps adapting), but its output is used only while
the microphone is found to hear the character (its last second is a delayed copy of what
played over the same second and up to MAX_LAG_S before: _mic_correlates) and the
canceller takes at least MIN_ERLE_DB out. With headphones there is no copy, and the user
is heard as the microphone heard them: AEC3 filters and, until it has converged,
suppresses the near end too, which made a barge-in over a first reply ~250 ms slower for
nothing. A level test cannot tell: the user's own first syllables are as loud as an echo.
"""

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from contracts.limits import AUDIO_SAMPLE_RATE
from services.asr.echo_canceller import EchoCanceller
from services.asr.echo_reference import EchoReference

RATE = AUDIO_SAMPLE_RATE
FRAME_S = 0.02
WINDOW_S = 1.0
"""The microphone audio each check looks at."""
MAX_LAG_S = 0.5
"""How late an echo may reach the microphone after playback's report (output buffers
and the room)."""
CHECK_EVERY = 10
"""Frames between two checks (0.2 s)."""
CORRELATED = 0.12
"""The GCC-PHAT peak above which the microphone hears the character (see
_mic_correlates)."""
BAND_HZ = (200.0, 4000.0)
SOUNDING_DBFS = -40.0
"""Played audio quieter than this over the window says nothing either way."""
MIN_ERLE_DB = 12.0
"""How much of the microphone's sound the canceller must take out while only the
character plays (its echo return loss enhancement) before its output is used: a
reference late for its echo (an output that reports after it sounds) leaves the echo in,
and the level gate then does better on the raw microphone than on a canceller that the
gate trusts to have done its work."""
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
    _removed: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=round(WINDOW_S / FRAME_S))
    )  # (microphone, canceller's output) energy of frames where only the character plays
    _using: bool = False

    def process(
        self, pcm: bytes, captured_at: float, user_talking: bool = False
    ) -> tuple[bytes, bool]:
        """The frame as the VAD, the gate and Whisper should hear it, and whether that is
        the canceller's output. user_talking: the gate holds for the user (the frame says
        nothing of how well the echo is taken out)."""
        played = self.reference.far_end_samples(captured_at, len(pcm) // 2)
        cleaned = self.canceller.cancel(pcm, played.astype("<i2").tobytes())
        far_samples = played.astype(np.float32)
        mic = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        if far_samples.any():
            self._sounded_at = captured_at
            if not user_talking:
                out = np.frombuffer(cleaned, dtype="<i2").astype(np.float32)
                self._removed.append((float(np.sum(mic**2)), float(np.sum(out**2))))
        self._mic.append(mic)
        self._far.append(far_samples)
        self._frames += 1
        if self._frames % CHECK_EVERY == 0 and self._mic_correlates():
            self._heard_at = captured_at
        recent = captured_at - self._sounded_at <= self.echo_tail_s
        heard = captured_at - self._heard_at <= KEEP_S
        # Once in use, it stays while the echo is heard: the user talking over the
        # character lowers the figure without the canceller doing worse.
        self._using = recent and heard and (self._using or self.erle_db() >= MIN_ERLE_DB)
        if self._using and not self.reference.lacks_audio(captured_at):
            return cleaned, True
        # Nothing to take out (quiet long enough, or no echo at this microphone), an echo
        # the canceller does not take out well enough, or one the reference lacks (a
        # session taken over mid-reply): the gate alone.
        return pcm, False

    def erle_db(self) -> float:
        """The canceller's echo return loss enhancement over the latest second in which
        only the character played."""
        if len(self._removed) < (self._removed.maxlen or 0) // 2:
            return 0.0
        before = sum(m for m, _ in self._removed)
        after = sum(c for _, c in self._removed)
        return 10 * math.log10(max(before, 1.0) / max(after, 1.0))

    def _mic_correlates(self) -> bool:
        """Does the microphone's last second follow what played (with some lag)?

        GCC-PHAT: the cross-spectrum with its magnitude divided out, over 200-4000 Hz,
        back in time: a delayed copy (an echo, through a room) gives one sharp peak of
        0.2-0.4, while two voices (the user over the character) or noise stay under 0.07,
        where a plain cross-correlation of two voices reached 0.14 (their pitch and
        formants correlate by chance)."""
        if len(self._mic) < (self._mic.maxlen or 0):
            return False
        mic = np.concatenate(self._mic)
        far = np.concatenate(self._far)
        far_rms = float(np.sqrt(np.mean(far[-len(mic) :] ** 2))) / 32768
        if far_rms < 10 ** (SOUNDING_DBFS / 20) or not mic.any():
            return False
        # far is the window plus MAX_LAG_S before it: lag k pairs mic[n] with far[n + k],
        # an echo d samples late at k = len(far) - len(mic) - d.
        lags = len(far) - len(mic)
        size = 1 << (len(far) + len(mic)).bit_length()
        cross = np.fft.rfft(far, size) * np.conj(np.fft.rfft(mic, size))
        frequencies = np.fft.rfftfreq(size, 1 / RATE)
        band = (frequencies >= BAND_HZ[0]) & (frequencies <= BAND_HZ[1])
        magnitude = np.abs(cross[band])
        weighted = np.zeros_like(cross)
        weighted[band] = cross[band] / (magnitude + 1e-3 * float(magnitude.max()) + 1e-12)
        peak = float(np.max(np.abs(np.fft.irfft(weighted, size)[: lags + 1])))
        return peak * size / (2 * int(band.sum())) >= CORRELATED  # 1: a perfect copy
