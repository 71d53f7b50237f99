"""`marionette replay`: put a recording back into Redis.

Two ways:
- `replay_entries`: every entry of the chosen topics, its fields exactly as recorded
  (for a new consumer, an overlay, or a test of what a stage made of them);
- `replay_inputs`: only what came from outside (audio frames, chat), published afresh
  by a "replay" producer so that today's stages run on it, then what they publish is
  collected and summarized per turn for the diff against the recording.
"""

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from redis.asyncio import Redis

from contracts.audio import AudioFrame
from contracts.envelope import Envelope
from contracts.limits import MAX_ID_CHARS
from contracts.topics import (
    ALL_TOPICS,
    AUDIO_FRAME,
    CHAT_MESSAGE,
    PLAYBACK_PROGRESS,
    VISION_OBSERVATION,
    Topic,
)
from services.bus import BusSettings, Producer
from services.bus.partitions import stream_for
from services.bus.wire import DATA_FIELD, MalformedMessage, split_envelope
from services.replay.pacing import ConsumerWindow, Pacer
from services.replay.recorder import RecordedList, Recorder, StopAfter
from services.replay.recording import Record, Recording
from services.replay.turns import TurnSummary, TurnTracker, decoded, summarize_turns

INPUT_TOPICS: tuple[Topic[Envelope], ...] = (AUDIO_FRAME, CHAT_MESSAGE, VISION_OBSERVATION)  # type: ignore[assignment]
"""What comes from outside the pipeline; the rest is the stages' work."""


def _route(record: Record, topic: Topic[Envelope], recorded: int, partitions: int) -> str:
    """The recorded stream, or the session's partition when the partition count changed."""
    if not topic.ordered or recorded == partitions:
        return record.stream
    try:
        body, _ = split_envelope(record.fields[DATA_FIELD])
        session = str(json.loads(body)["session_id"])
    except (KeyError, ValueError, MalformedMessage):
        return record.stream  # not a message of the topic: where it was
    return stream_for(topic, session, partitions)


async def replay_entries(
    client: Redis,
    recording: Recording,
    bus: BusSettings,
    *,
    topics: Iterable[str] | None = None,
    speed: float | None = 1.0,
) -> Counter[str]:
    """XADD every recorded entry of the topics (all by default) with the fields it had."""
    wanted = set(topics) if topics is not None else {t.name for t in ALL_TOPICS}
    pacer = Pacer(speed)
    window = ConsumerWindow(client, bus.queue_size) if speed is None else None
    sent: Counter[str] = Counter()
    for record in recording.records():
        topic = record.topic
        if topic is None or topic.name not in wanted:
            continue
        await pacer.wait(record.added_at)
        stream = _route(record, topic, recording.header.partitions, bus.partitions)
        maxlen = bus.maxlen_for(topic.name, topic.maxlen)
        await client.xadd(stream, record.fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        sent[topic.name] += 1
        if window is not None:
            await window.wait(stream)
    return sent


def replayed_session(session: str, tag: str) -> str:
    """A session id of its own for the replay, so it starts without the original's memory
    and its messages are not dropped as duplicates of the recorded ones."""
    suffix = f".r{tag}"
    return session[: MAX_ID_CHARS - len(suffix)] + suffix


def restamped(message: Envelope, session: str, shift_s: float) -> Envelope:
    """The message for a new session, its times moved by shift_s (as if made just now)."""
    update: dict[str, object] = {
        "session_id": session,
        "created_at": message.created_at + timedelta(seconds=shift_s),
    }
    if isinstance(message, AudioFrame):
        update["captured_at"] = message.captured_at + shift_s
    return message.model_copy(update=update)


@dataclass
class InputReplay:
    """What an inputs-only replay published, and what today's stages made of it."""

    recorded: list[TurnSummary]  # the turns as the recording has them
    sessions: dict[str, str] = field(default_factory=dict)  # recorded -> replayed session
    published: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # inputs that no longer match the contracts
    collected: list[Record] = field(default_factory=list)
    timed_out: bool = False
    finish_topics: list[str] = field(default_factory=list)

    def replayed(self) -> list[TurnSummary]:
        """Today's turns, under the recorded session ids so they pair with the recording."""
        back = {new: old for old, new in self.sessions.items()}
        mine = [r for r in self.collected if _session_of(r) in back]
        turns = summarize_turns(mine, self.finish_topics)
        for turn in turns:
            turn.session_id = back[turn.session_id]
        return turns


def _session_of(record: Record) -> str | None:
    message = decoded(record)
    return message.session_id if message is not None else None


def finish_topics(recording: Recording) -> list[str]:
    """What finishes a turn for the comparison: playback is not compared, so not awaited."""
    return [t for t in recording.header.topics if t != PLAYBACK_PROGRESS.name]


class InputPublisher:
    """A "replay" producer of the input topics, in sessions of the replay's own."""

    def __init__(self, bus: BusSettings, new_sessions: bool) -> None:
        self.bus = bus
        self.producer = Producer(bus, "replay", INPUT_TOPICS)
        self.topics = {topic.name: topic for topic in INPUT_TOPICS}
        self.tag = uuid.uuid4().hex[:4] if new_sessions else ""
        self.sessions: dict[str, str] = {}

    def session_for(self, recorded: str) -> str:
        if recorded not in self.sessions:
            self.sessions[recorded] = replayed_session(recorded, self.tag) if self.tag else recorded
        return self.sessions[recorded]

    async def publish(self, record: Record, message: Envelope) -> str:
        """Publish the recorded input as made now; returns the stream it went to."""
        topic = self.topics[message_topic(record)]
        session = self.session_for(message.session_id)
        fresh = restamped(message, session, time.time() - record.added_at)
        await self.producer.publish(fresh)
        return stream_for(topic, session, self.bus.partitions)


def message_topic(record: Record) -> str:
    return record.topic.name if record.topic else ""


async def replay_inputs(
    bus: BusSettings,
    recording: Recording,
    *,
    speed: float | None = 1.0,
    new_sessions: bool = True,
    wait_s: float = 120.0,
) -> InputReplay:
    """Publish the recorded inputs afresh and collect the stages' outputs until every
    recorded turn has finished again (or wait_s after the last input)."""
    finish = finish_topics(recording)
    result = InputReplay(summarize_turns(list(recording.records()), finish), finish_topics=finish)
    expected = sum(turn.finished for turn in result.recorded)
    inputs = InputPublisher(bus, new_sessions)
    client = Redis.from_url(bus.redis_url or "")
    sink = RecordedList()
    replayed_sessions: set[str] = set()
    tracker = TurnTracker(finish, sessions=replayed_sessions)
    recorder = Recorder(client, ALL_TOPICS, bus.partitions, sink, tracker=tracker)
    stop = asyncio.Event()
    collecting = asyncio.create_task(recorder.run(stop, StopAfter(turns=expected, linger_s=1.0)))
    try:
        await recorder.ready.wait()
        pacer = Pacer(speed)
        window = ConsumerWindow(client, bus.queue_size) if speed is None else None
        async with inputs.producer:
            for record in recording.records():
                if message_topic(record) not in inputs.topics:
                    continue
                message = decoded(record)
                if message is None:
                    result.skipped += 1
                    continue
                await pacer.wait(record.added_at)
                replayed_sessions.add(inputs.session_for(message.session_id))
                stream = await inputs.publish(record, message)
                result.published[message_topic(record)] += 1
                if window is not None:
                    await window.wait(stream)
        if expected:
            try:
                await asyncio.wait_for(asyncio.shield(collecting), wait_s)
            except TimeoutError:
                result.timed_out = True
    finally:
        stop.set()
        await asyncio.gather(collecting, return_exceptions=True)
        await client.aclose()
    result.sessions = inputs.sessions
    result.collected = sink.records
    return result
