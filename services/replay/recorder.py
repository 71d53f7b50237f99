"""`marionette record`: copy the entries of chosen topics, as they are added, to a sink.

The recorder only XREADs: no consumer group, nothing pending, nothing acknowledged, so
the live stages neither wait for it nor see it. It reads every stream of the topics in
one blocking call and writes what came back in the order Redis added it.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts.envelope import Envelope
from contracts.topics import Topic
from services.bus.partitions import streams_of, topic_of_stream
from services.replay.recording import Record
from services.replay.turns import TurnTracker, decoded

log = logging.getLogger("marionette.record")

READ_COUNT = 1000
READ_BLOCK_MS = 200
DRAIN_READS = 100


class RecordSink(Protocol):
    def write(self, record: Record) -> None: ...

    def flush(self) -> None: ...


@dataclass
class RecordedList:
    """A sink that keeps the records in memory (replay collects today's outputs in one)."""

    records: list[Record] = field(default_factory=list)

    def write(self, record: Record) -> None:
        self.records.append(record)

    def flush(self) -> None:
        pass


@dataclass(frozen=True)
class StopAfter:
    """When recording ends by itself (Ctrl-C always ends it)."""

    duration_s: float | None = None
    turns: int | None = None
    linger_s: float = 1.0
    """After the last turn finished, for the messages that trail it (the avatar's)."""


@dataclass
class RecordingStats:
    per_topic: Counter[str] = field(default_factory=Counter)
    turns_finished: int = 0
    seconds: float = 0.0
    lost: Counter[str] = field(default_factory=Counter)
    """Per stream: entries trimmed (MAXLEN) before the recorder read them."""

    @property
    def messages(self) -> int:
        return sum(self.per_topic.values())


async def stream_names(
    client: Redis, topics: Sequence[Topic[Envelope]], partitions: int
) -> list[str]:
    """Every stream of the topics: the configured partitions and any others already there."""
    names = {s for topic in topics for s in streams_of(topic, partitions)}
    for topic in topics:
        if topic.ordered:
            async for key in client.scan_iter(match=f"{topic.name}.p*", _type="STREAM"):
                stream = key.decode()
                if topic_of_stream(stream) is topic:
                    names.add(stream)
    return sorted(names)


async def entries_added(client: Redis, stream: str) -> tuple[int, int]:
    """(entries ever added to the stream, entries it holds now); (0, 0) when there is none."""
    try:
        info = await client.xinfo_stream(stream)
    except ResponseError:
        return 0, 0
    return int(info.get("entries-added", 0)), int(info.get("length", 0))


async def stream_ends(client: Redis, streams: Iterable[str]) -> dict[str, str]:
    """The id of each stream's newest entry ("0-0" for an empty or missing stream)."""
    ends = {}
    for stream in streams:
        newest = cast(list[tuple[bytes, object]], await client.xrevrange(stream, count=1))
        ends[stream] = newest[0][0].decode() if newest else "0-0"
    return ends


class Recorder:
    """Reads the topics' streams from `start` on (their current ends by default)."""

    def __init__(
        self,
        client: Redis,
        topics: Sequence[Topic[Envelope]],
        partitions: int,
        sink: RecordSink,
        *,
        from_start: bool = False,
        tracker: TurnTracker | None = None,
    ) -> None:
        self.client = client
        self.topics = topics
        self.partitions = partitions
        self.sink = sink
        self.from_start = from_start
        self.stats = RecordingStats()
        self.tracker = tracker or TurnTracker(t.name for t in topics)
        self._positions: dict[str, str] = {}
        self._read: Counter[str] = Counter()  # entries read, per stream
        self._added_before: dict[str, int] = {}  # entries added before the start, per stream
        self.ready = asyncio.Event()
        """Set once the start positions are taken: what is added after is recorded."""

    async def _start_positions(self) -> None:
        streams = await stream_names(self.client, self.topics, self.partitions)
        if self.from_start:
            self._positions = dict.fromkeys(streams, "0-0")
        else:
            self._positions = await stream_ends(self.client, streams)
        for stream in streams:
            added, held = await entries_added(self.client, stream)
            self._added_before[stream] = added - held if self.from_start else added
        self.ready.set()

    async def _count_lost(self) -> None:
        """Entries added since the start that were never read: trimmed before their turn.
        Exact once the streams are drained (a stream recreated since counts from zero)."""
        for stream, before in self._added_before.items():
            added, _ = await entries_added(self.client, stream)
            missed = added - before - self._read[stream]
            if missed > 0:
                self.stats.lost[stream] = missed

    async def read_once(self, block_ms: int | None) -> int:
        """One XREAD over every stream; the entries it got are written in added order."""
        replies = cast(
            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None,
            await self.client.xread(self._positions, count=READ_COUNT, block=block_ms),  # type: ignore[arg-type]
        )
        records = []
        for stream_key, entries in replies or []:
            stream = stream_key.decode()
            for entry_id, fields in entries:
                records.append(Record(stream, entry_id.decode(), fields))
            if entries:
                self._positions[stream] = entries[-1][0].decode()
                self._read[stream] += len(entries)
        records.sort(key=lambda r: r.order)
        for record in records:
            self._write(record)
        return len(records)

    def _write(self, record: Record) -> None:
        self.sink.write(record)
        topic = record.topic
        name = topic.name if topic else record.stream
        self.stats.per_topic[name] += 1
        if name in self.tracker.watched:  # the others (frames are the bulk) are not decoded
            message = decoded(record)
            if message is not None:
                self.stats.turns_finished += self.tracker.see(message, name, time.monotonic())

    async def run(self, stop: asyncio.Event, until: StopAfter = StopAfter()) -> RecordingStats:
        """Record until `stop` is set or `until` is met; then take what is left and return."""
        started = time.monotonic()
        await self._start_positions()
        deadline = started + until.duration_s if until.duration_s is not None else None
        linger_until: float | None = None
        last_flush = started
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if linger_until is not None and now >= linger_until:
                break
            await self.read_once(READ_BLOCK_MS)
            self.stats.turns_finished += self.tracker.poll(time.monotonic())
            enough = until.turns is not None and self.stats.turns_finished >= until.turns
            if enough and linger_until is None:
                linger_until = time.monotonic() + until.linger_s
            if time.monotonic() - last_flush > 1.0:
                self.sink.flush()
                last_flush = time.monotonic()
        for _ in range(DRAIN_READS):  # what was added before the stop is recorded too
            if not await self.read_once(None):
                break
        self.sink.flush()
        await self._count_lost()
        self.stats.seconds = time.monotonic() - started
        return self.stats
