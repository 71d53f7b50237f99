"""Barge-in: noticing the user talk over the character, and not its own voice.

asr learns from playback.progress which turn the character is saying and how loud it is.
While its voice may reach the microphone, a chunk of audio counts as the user's speech
only if the VAD says speech *and* it is louder than the character's voice would be there:
the chunk's played level, plus the echo coupling (measured while it talks and nobody else
does), plus a margin. This echo gate also feeds the endpointer, so the character never
takes its own voice for a turn.

Over a talking character:
  barge_in_onset_ms of gated speech   -> Hold: playback pauses, the character goes quiet
  then barge_in_min_speech_ms of it   -> InterruptTurn: the turn ends everywhere (with
                                          resume_false_interruption, once asr knows the
                                          words: services.asr.stage)
  or barge_in_resume_ms of quiet first -> Resume: a cough, an "uh-huh"; it goes on, and
                                          that utterance is not a turn of its own

Until about a second of the character's voice was measured, the echo coupling is taken to
be at least the configured one (the floor), and the floor may hide the start of the user's
speech. Learned as the echo, each such chunk would raise the gate over the next (a voice
rises by less than the margin in 20 ms) and the user would never be heard over that reply:
so a chunk louder by more than the margin than anything measured is learned only once no
barge-in came of it.

What the gate alone cannot do: tell the user from the echo when the user is not clearly
louder at the microphone than the character's voice (speakers loud, user far). asr's echo
canceller (echo_cancellation) takes the voice out first; the gate then works on what is
left (`cancelling`: the coupling is at least echo_cancelled_coupling_db, as the canceller
leaks while it adapts).
"""

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from contracts import PlaybackProgress
from services.asr.settings import AsrSettings
from services.asr.vad import VoiceActivity
from services.audio_levels import level_dbfs

log = logging.getLogger("marionette.asr")

COUPLING_WINDOW_S = 2.0
"""The echo coupling is the loudest seen over this much of the character's speech."""
COUPLING_LEARNED_S = 1.0
"""Before this much was measured, the configured coupling is the floor."""
COUPLING_GRACE_S = 0.5
"""The first this much of the character's voice is learned at once, however loud: its echo
starts then (the reply's first sound, after the output's latency), and must be learned as
it rises. (An echo about as loud as the output itself that first reaches the microphone
later than this is taken for the user until learned.)"""
DOUBT_S = 0.25
"""A chunk much louder than anything measured waits this long to be learned: enough for the
user's voice to rise over the floor and pause the character (then it is not learned)."""


@dataclass(frozen=True)
class Hold:
    turn_id: str


@dataclass(frozen=True)
class Resume:
    turn_id: str


@dataclass(frozen=True)
class InterruptTurn:
    turn_id: str


BargeInEvent = Hold | Resume | InterruptTurn


@dataclass
class CharacterVoice:
    """What playback last said about the character's voice."""

    turn_id: str
    state: str
    level_dbfs: float
    since: float
    earlier_level_dbfs: float  # the chunk before: its echo outlasts its end a little
    until: float = math.inf  # when the chunk it is playing ends (if playback said)

    def sounding(self, now: float) -> bool:
        """Is its voice coming out of the speakers now? Not in a gap between chunks (the
        next one late), however long playback's last report was "playing"."""
        return self.state == "playing" and now < self.until

    def fell_silent(self) -> float:
        """When it stopped sounding (as far as reports tell)."""
        return min(self.until, self.since) if self.state != "playing" else self.until


class BargeIn:
    """One session's echo gate and barge-in detector; the VoiceActivity of its endpointer."""

    def __init__(
        self,
        settings: AsrSettings,
        vad: VoiceActivity,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.chunk_ms = vad.chunk_ms
        self._vad = vad
        self._clock = clock
        self.voice: CharacterVoice | None = None
        self._excess: deque[float] = deque(maxlen=round(COUPLING_WINDOW_S * 1000 / vad.chunk_ms))
        self._chunks = 0  # heard so far: the clock of what waits to be learned
        self._doubtful: deque[tuple[int, float]] = deque()  # (chunk, excess) not learned yet
        self._run_ms = 0
        self._held: str | None = None
        self._voiced_ms = 0
        self._quiet_ms = 0
        self._interrupted: str | None = None
        self._events: list[BargeInEvent] = []
        self.cancelling = False
        """Set by asr while an echo canceller cleans what is_speech hears."""

    def on_progress(self, progress: PlaybackProgress) -> None:
        turn = progress.turn_id or ""
        now = self._clock()
        last = self.voice
        level = progress.level_dbfs
        if level is None:
            level = last.level_dbfs if last is not None and last.turn_id == turn else -120.0
        earlier = last.level_dbfs if last is not None else level
        until = math.inf if progress.remaining_s is None else now + progress.remaining_s
        self.voice = CharacterVoice(turn, progress.state, level, now, earlier, until)

    def is_speech(self, chunk: bytes) -> bool:
        self._chunks += 1
        self._learn_doubtful()
        voiced = self._vad.is_speech(chunk)
        gated = False  # speech, but not louder than the character's echo would be
        threshold = self._threshold()
        if threshold is not None:
            level = level_dbfs(chunk)
            louder = level >= threshold
            if not (voiced and louder) and self._measuring():
                self._learn(level - self.voice.level_dbfs)  # type: ignore[union-attr]
            gated = voiced and not louder
            voiced = voiced and louder
        if self.settings.barge_in:
            self._follow(voiced, gated)
        return voiced

    def drain(self) -> list[BargeInEvent]:
        events, self._events = self._events, []
        return events

    @property
    def holding(self) -> bool:
        """The character is paused for the user's speech, and whether it goes on is open."""
        return self._held is not None

    def forgive(self, turn_id: str) -> None:
        """The turn's interrupt was taken back (only a backchannel, or no words): it goes
        on, and talking over it pauses it again."""
        if self._interrupted == turn_id:
            self._interrupted = None

    def hear_cancelled(self, cancelled: bool) -> None:
        """Whether the audio it judges is the echo canceller's output from now on. What
        it learned of the echo was learned of the other signal: it learns again."""
        if cancelled != self.cancelling:
            log.info("%s the echo canceller's output", "hearing" if cancelled else "leaving")
            self.cancelling = cancelled
            self._excess.clear()
            self._doubtful.clear()

    def coupling_db(self) -> float:
        """How much quieter than its output the character is at the microphone (after the
        echo canceller, when one cleans it)."""
        measured = max(self._excess, default=-120.0)
        if self.cancelling:
            # What AEC3 leaves is measured as before, but it leaks while it adapts (the
            # first second or two), after the gate has heard it working well: a floor.
            return max(measured, self.settings.echo_cancelled_coupling_db)
        if self._unsure():
            return max(measured, self.settings.echo_coupling_db)
        return measured

    def _unsure(self) -> bool:
        """Is the floor in force? Until enough was measured, and while louder sounds wait
        to be learned (the echo may yet prove that loud)."""
        return bool(self._doubtful) or len(self._excess) * self.chunk_ms < (
            COUPLING_LEARNED_S * 1000
        )

    def _learn(self, excess_db: float) -> None:
        """Take a chunk heard while the character talks, and nobody else seems to, as its
        echo; one louder by more than the margin than anything measured, which only the
        floor hides, waits (it may be the user starting to talk)."""
        grace = len(self._excess) * self.chunk_ms < COUPLING_GRACE_S * 1000
        heard = max(self._excess, default=-math.inf)
        if self._unsure() and not grace and excess_db > heard + self.settings.echo_margin_db:
            self._doubtful.append((self._chunks, excess_db))
        else:
            self._excess.append(excess_db)

    def _learn_doubtful(self) -> None:
        """What waited long enough with no barge-in coming of it was the echo after all (or
        a user too quiet to tell from it)."""
        due = self._chunks - DOUBT_S * 1000 / self.chunk_ms
        while self._doubtful and self._doubtful[0][0] <= due:
            self._excess.append(self._doubtful.popleft()[1])

    def _measuring(self) -> bool:
        """Is what the microphone hears now the character alone? (It plays; nobody else
        seems to talk.)"""
        voice = self.voice
        playing = voice is not None and voice.sounding(self._clock())
        return playing and self._held is None and not self._run_ms

    def _threshold(self) -> float | None:
        """The level the user's speech must reach now; None when the character is silent."""
        voice = self.voice
        if voice is None:
            return None
        tail_s = self.settings.echo_tail_ms / 1000
        now = self._clock()
        if not voice.sounding(now) and now - voice.fell_silent() >= tail_s:
            return None
        # Just after a report, the chunk before may still echo: take the louder of the two.
        recent = now - voice.since < tail_s or not voice.sounding(now)
        played = max(voice.level_dbfs, voice.earlier_level_dbfs) if recent else voice.level_dbfs
        echo = played + self.coupling_db() + self.settings.echo_margin_db
        return max(self.settings.barge_in_min_dbfs, echo)

    def _talking_turn(self) -> str | None:
        voice = self.voice
        if voice is None or not voice.sounding(self._clock()):
            return None
        return None if voice.turn_id == self._interrupted else voice.turn_id

    def _follow(self, voiced: bool, gated: bool) -> None:
        if self._held is not None:
            self._while_held(self._held, voiced, gated)
            return
        turn = self._talking_turn()
        self._run_ms = self._run_ms + self.chunk_ms if voiced and turn else 0
        if turn is not None and self._run_ms >= self.settings.barge_in_onset_ms:
            self._events.append(Hold(turn))
            self._held, self._voiced_ms, self._quiet_ms, self._run_ms = turn, self._run_ms, 0, 0
            self._doubtful.clear()  # the user starting to talk, not the echo

    def _while_held(self, turn: str, voiced: bool, gated: bool) -> None:
        if voiced:
            self._voiced_ms += self.chunk_ms
            self._quiet_ms = 0
            if self._voiced_ms >= self.settings.barge_in_min_speech_ms:
                self._events.append(InterruptTurn(turn))
                self._held, self._interrupted = None, turn
        elif not gated:
            # Gated speech is not quiet: until the pause reaches playback (and its echo tail
            # is over) the gate may hide the user still talking, and a slow pause would
            # then let the character go on over them.
            self._quiet_ms += self.chunk_ms
            if self._quiet_ms >= self.settings.barge_in_resume_ms:
                self._events.append(Resume(turn))
                self._held = None
