"""Turns as a recording shows them: what was heard, what was said back, and how fast.

The recorder uses `TurnTracker` to stop after a number of finished turns; replay uses
`summarize_turns` on the recording and on what today's stages published, and compares.
"""

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from contracts import turns as turn_rules
from contracts.audio import AudioFrame
from contracts.chat import ChatMessage
from contracts.envelope import Envelope
from contracts.policy import PolicyToken
from contracts.speech import AsrFinal
from contracts.tools import ToolEvent
from contracts.topics import ASR_FINAL, CHAT_MESSAGE, PLAYBACK_PROGRESS, POLICY_TOKEN, TTS_CHUNK
from contracts.tts import TtsChunk
from contracts.turns import capture_run_of
from services.bus.wire import MalformedMessage, StreamEntry, decode_entry
from services.replay.recording import Record

ANY_SIZE = 1 << 30
"""Size limits are for live consumers; a recording is read whatever its entries' size."""

TurnKey = tuple[str, str]
"""(session id, turn id)"""

MILESTONES = (PLAYBACK_PROGRESS.name, TTS_CHUNK.name, POLICY_TOKEN.name)
"""What ends a turn, latest first: its audio played, its last chunk spoken, its reply."""


def decoded(record: Record) -> Envelope | None:
    """The record's message, checked against its topic's contract; None when it is not one."""
    topic = record.topic
    if topic is None:
        return None
    entry = StreamEntry(record.stream, record.entry_id.encode(), record.fields)
    try:
        return decode_entry(entry, topic, ANY_SIZE).envelope
    except MalformedMessage:
        return None


def ends_turn(message: Envelope, milestone: str | None) -> bool:
    """Whether the message is the one that finishes its turn, given the milestone topic."""
    if milestone is None:
        return isinstance(message, AsrFinal | ChatMessage)
    return turn_rules.ends_turn(message, milestone)


def milestone_of(topic_names: Iterable[str]) -> str | None:
    names = set(topic_names)
    return next((m for m in MILESTONES if m in names), None)


CHAIN = tuple(reversed(MILESTONES))
"""The stages' outputs in pipeline order: reply, then its audio, then its playing."""
OPENINGS = (ASR_FINAL.name, CHAT_MESSAGE.name)


@dataclass
class _TurnProgress:
    started: set[str] = field(default_factory=set)  # chain topics with a message of the turn
    done_at: dict[str, float] = field(default_factory=dict)  # chain topic -> when it finished
    opened_at: float | None = None


class TurnTracker:
    """Tells when turns finish: when the last stage of the recorded ones is done with them.

    A stage that is not running (no playback on a headless machine) would leave every turn
    open, so after the reply, a stage not seen at all yet that has not started on the turn
    `grace_s` after the previous one finished counts as absent, and the turn as finished.
    """

    def __init__(
        self,
        topic_names: Iterable[str],
        sessions: Container[str] | None = None,
        grace_s: float = 3.0,
    ) -> None:
        names = set(topic_names)
        self.chain = [t for t in CHAIN if t in names]
        self.watched = {*self.chain, *OPENINGS}
        self.sessions = sessions  # only these sessions' turns count (None: all)
        self.grace_s = grace_s
        self.finished: list[TurnKey] = []
        self.running: set[str] = set()  # chain topics seen at all: their stage runs
        self._open: dict[TurnKey, _TurnProgress] = {}

    def see(self, message: Envelope, topic_name: str, now: float) -> int:
        """Take one message in; returns how many turns finished (with any overdue)."""
        if message.turn_id is None or topic_name not in self.watched:
            return self.poll(now)
        if self.sessions is not None and message.session_id not in self.sessions:
            return self.poll(now)
        key = (message.session_id, message.turn_id)
        if key in self.finished:
            return self.poll(now)
        progress = self._open.setdefault(key, _TurnProgress())
        if topic_name in OPENINGS:
            progress.opened_at = now
        else:
            progress.started.add(topic_name)
            self.running.add(topic_name)
            if ends_turn(message, topic_name):
                progress.done_at[topic_name] = now
        return self.poll(now)

    def poll(self, now: float) -> int:
        """Finish the turns that are done, or whose next stage never started."""
        done = [key for key, progress in self._open.items() if self._is_done(progress, now)]
        for key in done:
            del self._open[key]
            self.finished.append(key)
        return len(done)

    def _is_done(self, progress: _TurnProgress, now: float) -> bool:
        last_done: float | None = progress.opened_at
        for step, topic in enumerate(self.chain):
            if topic in progress.done_at:
                last_done = progress.done_at[topic]
                continue
            if topic in progress.started or last_done is None:
                return False  # this stage is working on it
            if step == 0 or topic in self.running:
                return False  # the reply (a cold model is slow), or a stage known to run
            return now - last_done >= self.grace_s  # a stage that never showed up
        return last_done is not None


@dataclass
class TurnSummary:
    """One turn: what opened it and what the stages made of it, with wall times (Unix s)."""

    session_id: str
    turn_id: str
    kind: Literal["voice", "chat"] | None = None
    heard: str | None = None
    speech_start_s: float | None = None
    reply: str | None = None
    status: str | None = None
    tokens: int = 0
    chunks: int = 0
    audio_s: float = 0.0
    tools: list[str] = field(default_factory=list)  # "dice: ok", one per tool result
    finished: bool = False
    opened_at: float | None = None
    speech_end_at: float | None = None
    first_token_at: float | None = None
    first_chunk_at: float | None = None
    _token_text: list[str] = field(default_factory=list, repr=False)

    def latencies_ms(self) -> dict[str, float | None]:
        def between(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else round((end - start) * 1000, 1)

        return {
            "asr_final": between(self.speech_end_at, self.opened_at),
            "first_token": between(self.opened_at, self.first_token_at),
            "first_audio": between(self.opened_at, self.first_chunk_at),
            "voice_to_voice": between(self.speech_end_at, self.first_chunk_at),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "kind": self.kind,
            "heard": self.heard,
            "reply": self.reply,
            "status": self.status,
            "chunks": self.chunks,
            "audio_s": round(self.audio_s, 3),
            "tools": self.tools,
            "finished": self.finished,
            "latency_ms": self.latencies_ms(),
        }


def summarize_turns(
    records: Sequence[Record], milestone_topics: Iterable[str] | None = None
) -> list[TurnSummary]:
    """The turns in these records, in the order they opened."""
    milestone = milestone_of(milestone_topics or {r.topic.name for r in records if r.topic})
    turns: dict[TurnKey, TurnSummary] = {}
    wall_offset: dict[tuple[str, str], float] = {}  # capture time minus audio time, per run
    for record in sorted(records, key=lambda r: r.order):
        message = decoded(record)
        if message is None:
            continue
        if isinstance(message, AudioFrame):
            run = (message.session_id, message.origin)
            at_s = message.seq * message.duration_ms / 1000
            wall_offset.setdefault(run, message.captured_at - at_s)
            continue
        if message.turn_id is None:
            continue  # avatar blinks and the like belong to no turn
        key = (message.session_id, message.turn_id)
        turn = turns.setdefault(key, TurnSummary(*key))
        _add(turn, message, record.added_at)
        turn.finished = turn.finished or ends_turn(message, milestone)
    for turn in turns.values():
        # asr names a turn after its capture run, whose frames tell its wall clock.
        offset = wall_offset.get((turn.session_id, capture_run_of(turn.turn_id) or ""))
        if turn.kind == "voice" and offset is not None and turn.speech_end_at is not None:
            turn.speech_end_at += offset
        else:
            turn.speech_end_at = None
        if turn.reply is None and turn._token_text:
            turn.reply = "".join(turn._token_text)
    opened = [t for t in turns.values() if t.kind is not None]
    return sorted(opened, key=lambda t: t.opened_at or 0.0)


def _add(turn: TurnSummary, message: Envelope, added_at: float) -> None:
    if isinstance(message, AsrFinal):
        turn.kind, turn.heard, turn.opened_at = "voice", message.text, added_at
        turn.speech_start_s = message.speech_start_s
        turn.speech_end_at = message.speech_end_s  # audio time; made wall time once frames are seen
    elif isinstance(message, ChatMessage):
        turn.kind, turn.heard, turn.opened_at = "chat", message.text, added_at
    elif isinstance(message, PolicyToken):
        turn.tokens += 1
        if turn.first_token_at is None:
            turn.first_token_at = added_at
        turn._token_text.append(message.text)
        if message.final:
            turn.reply, turn.status = message.reply_text, message.status
    elif isinstance(message, ToolEvent) and message.phase == "result":
        turn.tools.append(f"{message.tool}: {message.outcome}")
    elif isinstance(message, TtsChunk) and message.pcm:  # the empty last chunk is no audio
        turn.chunks += 1
        turn.audio_s += message.duration_s
        if turn.first_chunk_at is None:
            turn.first_chunk_at = added_at
