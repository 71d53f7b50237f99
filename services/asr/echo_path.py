"""One session's echo path: the character's audio as it plays (EchoReference), the
canceller that takes it out of the microphone, and whether there is any echo to take out.

The canceller runs on every frame (it keeps adapting), but its output is used only while
the microphone hears the character: the far end sounds and the microphone picks up
something within ECHO_HEARD_DB of it. With headphones (or speakers far away) nothing is,
and the user is heard as the microphone heard them: AEC3 filters and, while it has not
converged, suppresses the near end too, which made a barge-in over a first reply
~250 ms slower for nothing. The first speakers' echo of a session switches it on within a
frame, and it stays on while the character was heard in the last ECHO_WINDOW_S of its
voice.
"""

import math
from collections import deque
from dataclasses import dataclass, field

from services.asr.echo_canceller import EchoCanceller
from services.asr.echo_reference import EchoReference
from services.audio_levels import level_dbfs

ECHO_HEARD_DB = -40.0
"""The microphone, against the far end's level in the same frame, above which the
character's voice counts as reaching it (a desk microphone near speakers: -30 to -5 dB;
headphones leak under -50)."""
SOUNDING_DBFS = -30.0
"""A far-end frame quieter than this is no evidence either way (its echo could be under
the room's noise); the voice's loud frames are -25 to -10 dBFS."""
LOUD_DB = 6.0
ECHO_WINDOW_S = 4.0
FRAME_S = 0.02


@dataclass
class EchoPath:
    reference: EchoReference
    canceller: EchoCanceller
    echo_tail_s: float
    _sounded_at: float = -math.inf  # capture time of the latest frame the far end sounded
    _heard: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=round(ECHO_WINDOW_S / FRAME_S))
    )  # (microphone, far end) dBFS over the character's latest voiced frames

    def process(self, pcm: bytes, captured_at: float, user_talking: bool) -> tuple[bytes, bool]:
        """The frame as the VAD, the gate and Whisper should hear it, and whether that is
        the canceller's output. user_talking: the gate holds for the user (their voice
        is not the character's echo, and says nothing of it)."""
        far = self.reference.far_end(captured_at, len(pcm) // 2)
        cleaned = self.canceller.cancel(pcm, far)
        far_dbfs = level_dbfs(far)
        if far_dbfs > SOUNDING_DBFS:
            self._sounded_at = captured_at
            if not user_talking:
                self._heard.append((level_dbfs(pcm), far_dbfs))
        recent = captured_at - self._sounded_at <= self.echo_tail_s
        if recent and self.echo_heard() and not self.reference.lacks_audio(captured_at):
            return cleaned, True
        # Nothing to take out (quiet long enough, or no echo at this microphone), or an
        # echo the reference lacks (a session taken over mid-reply): the gate alone.
        return pcm, False

    def echo_heard(self) -> bool:
        """Judged on the character's loudest frames (within LOUD_DB of the loudest): on
        quieter ones, the room's own noise would pass for an echo."""
        loudest = max((far for _, far in self._heard), default=-math.inf)
        return any(
            mic - far >= ECHO_HEARD_DB for mic, far in self._heard if far >= loudest - LOUD_DB
        )
