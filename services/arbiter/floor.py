"""Is the character busy? The floor of one session, from the messages of its turns.

The person at the microphone comes first: the floor is held while the user speaks
(asr.speech start, until asr makes the transcript), while a turn is answered (asr.final or
chat.message, until policy's final token) and while the reply plays (until playback
reports it finished or flushed: contracts.turns). A reply with no words, or one policy
refused or failed (blocked, error), may never be played, so the floor is not held for its
audio unless playback reports it playing. A turn with no news for `turn_timeout_s` (a
stage is down) lets go. Messages of several topics come in any order between topics, so a
hold only moves forward (speaking, transcribing, answering, replied, playing), and a turn
that ended stays ended.

Pure: every function takes the time; the stage keeps a Floor per session, checkpointed.
"""

from typing import Literal

from pydantic import BaseModel, Field

from contracts.policy import ReplyStatus

Phase = Literal["speaking", "transcribing", "answering", "replied", "playing"]
ORDER: dict[Phase, int] = {
    "speaking": 0, "transcribing": 1, "answering": 2, "replied": 3, "playing": 4,
}  # fmt: skip
SILENT_STATUSES: frozenset[ReplyStatus] = frozenset({"blocked", "error"})
TOUCH_S = 1.0
"""Tokens and interim transcripts come many a second: a hold notes one at most this often
(each note is a checkpoint write)."""
ENDED_KEPT = 64  # turns remembered as ended, so their late messages do not reopen them


class Hold(BaseModel):
    """One turn holding the floor."""

    phase: Phase
    since: float = Field(description="When this phase began (unix s).")
    seen: float = Field(description="The turn's latest message (unix s).")
    grace_s: float = Field(default=0.0, description="Audio still to play at the last report.")
    chat: bool = Field(default=False, description="A line this arbiter released.")


class Floor(BaseModel):
    holds: dict[str, Hold] = Field(default_factory=dict)
    ended: list[str] = Field(default_factory=list, description="Recently ended, oldest first.")
    silent: list[str] = Field(
        default_factory=list, description="Ended without audio expected: playing reopens them."
    )
    free_since: float = Field(default=0.0, description="When the last hold ended (unix s).")
    chat_ended_at: float = Field(default=0.0, description="When a released line's turn ended.")

    def fork(self) -> "Floor":
        """A copy to change (much cheaper than a deep copy: what is shared is never changed)."""
        return Floor.model_construct(
            holds={turn: hold.model_copy() for turn, hold in self.holds.items()},
            ended=list(self.ended), silent=list(self.silent),
            free_since=self.free_since, chat_ended_at=self.chat_ended_at,
        )  # fmt: skip

    # --- what holds it ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.holds)

    @property
    def chat_in_flight(self) -> bool:
        """A line this arbiter released is still being answered or played."""
        return any(hold.chat for hold in self.holds.values())

    def why_busy(self) -> str:
        phases = sorted({hold.phase for hold in self.holds.values()}, key=ORDER.__getitem__)
        return ", ".join(phases) or "free"

    # --- events ----------------------------------------------------------------------------

    def _advance(self, turn: str, phase: Phase, now: float, *, create: bool = True) -> None:
        hold = self.holds.get(turn)
        if hold is None:
            if not create or turn in self.ended:
                return
            self.holds[turn] = Hold(phase=phase, since=now, seen=now)
            return
        hold.seen = now
        if ORDER[phase] > ORDER[hold.phase]:
            hold.phase, hold.since = phase, now

    def speech(self, turn: str, state: Literal["start", "end"], now: float) -> None:
        if state == "start":
            self._advance(turn, "speaking", now)
        else:
            self._advance(turn, "transcribing", now, create=False)

    def heard(self, turn: str, now: float) -> None:
        """Still speaking (an interim transcript)."""
        if self._fresh(turn, now):
            self._advance(turn, "speaking", now, create=False)

    def opened(self, turn: str, now: float, *, chat: bool = False) -> None:
        """asr.final or chat.message: a turn to answer."""
        self._advance(turn, "answering", now)
        if chat and turn in self.holds:
            self.holds[turn].chat = True

    def token(self, turn: str, now: float) -> None:
        """A reply token: a reply without an opening message of its own (a scripted "say")
        holds the floor too."""
        if self._fresh(turn, now):
            self._advance(turn, "answering", now)

    def _fresh(self, turn: str, now: float) -> bool:
        hold = self.holds.get(turn)
        return hold is None or now - hold.seen >= TOUCH_S

    def replied(self, turn: str, status: ReplyStatus, text: str, now: float) -> None:
        """Policy's final token: now the audio, if there will be any."""
        hold = self.holds.get(turn)
        if hold is not None and hold.phase == "playing":
            hold.seen = now
            return
        if status in SILENT_STATUSES or not text.strip():
            self.end(turn, now, silent=True)
            return
        self._advance(turn, "replied", now)

    def progress(self, turn: str, state: str, remaining_s: float | None, now: float) -> None:
        if state in ("finished", "flushed"):
            self.end(turn, now)
            return
        if turn in self.silent:  # audio after all: it holds the floor while it plays
            self.silent.remove(turn)
            self.ended.remove(turn)
        self._advance(turn, "playing", now)
        if turn in self.holds:
            self.holds[turn].grace_s = remaining_s or 0.0

    def end(self, turn: str, now: float, *, silent: bool = False) -> None:
        hold = self.holds.pop(turn, None)
        if turn not in self.ended:
            self.ended.append(turn)
            if silent:
                self.silent.append(turn)
        del self.ended[:-ENDED_KEPT]
        self.silent = [t for t in self.silent if t in self.ended]
        if hold is not None:
            if hold.chat:
                self.chat_ended_at = now
            if not self.holds:
                self.free_since = now

    # --- time ------------------------------------------------------------------------------

    def deadline(self, hold: Hold, turn_timeout_s: float, transcript_wait_s: float) -> float:
        if hold.phase == "transcribing":
            return hold.since + transcript_wait_s
        return hold.seen + turn_timeout_s + hold.grace_s

    def expire(self, now: float, turn_timeout_s: float, transcript_wait_s: float) -> list[str]:
        """Let go of turns whose end never came; returns them."""
        gone = [
            turn
            for turn, hold in self.holds.items()
            if now >= self.deadline(hold, turn_timeout_s, transcript_wait_s)
        ]
        for turn in gone:
            self.end(turn, now)
        return gone

    def next_deadline(self, turn_timeout_s: float, transcript_wait_s: float) -> float | None:
        times = [self.deadline(h, turn_timeout_s, transcript_wait_s) for h in self.holds.values()]
        return min(times, default=None)
