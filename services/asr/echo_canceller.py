"""Acoustic echo cancellation: the microphone with the character's own voice taken out.

The level gate (services.asr.barge_in) can only tell the user from the character's echo
when the user is clearly louder at the microphone. A canceller knows what was played (the
far end, from services.asr.echo_reference) and subtracts its echo, room and delay
included, so the user's speech stands out however loud the speakers are.

The implementation is WebRTC's AEC3 (the canceller in Chrome) from the pywebrtc-audio
wheel: it estimates the echo path's delay itself (a reference that leads the echo by up
to a few hundred ms is fine; one that lags it cannot be cancelled), adapts within about
a second of the character speaking, and suppresses what its filter leaves. It works in
10 ms blocks and keeps its state between calls: one instance per microphone, fed every
frame in capture order, silence included.
"""

from typing import Protocol

import numpy as np

from contracts.limits import AUDIO_SAMPLE_RATE
from services.errors import StageStartError

REQUIREMENT = "pywebrtc-audio==0.2.0"
BLOCK_SAMPLES = AUDIO_SAMPLE_RATE // 100
"""AEC3 works on 10 ms blocks; a frame that is not a whole number of them is padded."""


class EchoCancellerMissing(StageStartError, RuntimeError):
    """The echo canceller's package is not installed."""


class EchoCanceller(Protocol):
    def cancel(self, near: bytes, far: bytes) -> bytes:
        """near: the microphone, far: what played at the same capture time (both 16 kHz
        mono s16le, the same length); returns near with the echo of far removed."""
        ...

    def reset(self) -> None:
        """Forget the echo path (a new microphone or speaker)."""
        ...


class WebRtcEchoCanceller:
    """WebRTC AEC3 (pywebrtc-audio). Not thread-safe: one per session's microphone."""

    def __init__(self, stream_delay_ms: int = 0) -> None:
        """stream_delay_ms: a hint of how long after the far end its echo reaches the
        microphone; 0 lets AEC3 find it (it does within a second or so)."""
        try:
            from pywebrtc_audio import EchoCanceller as Aec3
        except ImportError:
            raise EchoCancellerMissing(
                "MARIONETTE_ASR_ECHO_CANCELLATION=true needs pywebrtc-audio (WebRTC's echo "
                f"canceller): pip install '{REQUIREMENT}', or set it to false"
            ) from None
        self._aec = Aec3(
            sample_rate=AUDIO_SAMPLE_RATE, num_channels=1, stream_delay_ms=stream_delay_ms
        )

    def cancel(self, near: bytes, far: bytes) -> bytes:
        if len(near) != len(far):
            raise ValueError(f"near end of {len(near)} bytes, far end of {len(far)}")
        mic = np.frombuffer(near, dtype="<i2")
        played = np.frombuffer(far, dtype="<i2")
        if len(mic) % BLOCK_SAMPLES:
            # pywebrtc-audio would pad the last block with zeros inside AEC3's timeline,
            # shifting every later frame: frames of 10/20/30 ms never need this.
            raise ValueError(f"{len(mic)} samples: the canceller takes whole 10 ms blocks")
        cleaned = self._aec.process(mic, played)
        return np.asarray(cleaned, dtype="<i2").tobytes()

    def reset(self) -> None:
        self._aec.reset()
