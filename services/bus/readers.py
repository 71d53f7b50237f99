"""The read loops: they fetch entries from Redis and hand them to a handler.

PartitionedReader serves an ordered topic: the replica reads only the partitions it owns
(services.bus.ownership), each through its own bounded queue and worker, so a session's
messages are handled in order. A worker starting on a partition first finishes what the
previous owner left pending. One XREADGROUP fetches every partition held; on a Redis Cluster,
where the partitions live in different slots, each partition has a fetch loop of its own.
BroadcastReader serves an unordered topic (control): every replica reads every entry, with
no consumer group, so an interrupt reaches the replica that owns the turn.
Neither loop ever stops on an error: it backs off briefly and tries again.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from services.bus.connect import is_cluster
from services.bus.delivery import EntryProcessor, Held
from services.bus.fencing import Fence, Fenced
from services.bus.partitions import partition_stream
from services.bus.recovery import (
    REDIS_UNAVAILABLE,
    TRANSIENT_ERRORS,
    Backoff,
    ensure_group,
    is_missing_group,
    raise_if_cancelling,
)
from services.bus.wire import StreamEntry

log = logging.getLogger("marionette.bus")

Fields = dict[bytes, bytes]
Step = Callable[[], Awaitable[None]]


async def resilient(name: str, step: Step, recreate_groups: Step, *, repeat: bool = True) -> None:
    """Call step() (in a loop when repeat) and survive every error with a short backoff.

    With repeat=False it returns after the first success.
    """
    backoff = Backoff()
    failing = False
    while True:
        raise_if_cancelling()  # a library below may have swallowed our cancellation
        try:
            await step()
            if failing:
                log.warning("%s: Redis is back", name)
            failing = False
            backoff.reset()
            if not repeat:
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise_if_cancelling()
            if is_missing_group(exc):
                log.warning("%s: consumer group is gone (Redis lost its data?); recreating", name)
                with contextlib.suppress(Exception):
                    await recreate_groups()
                continue
            if not failing:
                level = logging.WARNING if isinstance(exc, TRANSIENT_ERRORS) else logging.ERROR
                log.log(level, "%s: %s: %s; retrying", name, type(exc).__name__, exc)
            failing = True
            await backoff.wait()


async def claim_pending(processor: EntryProcessor, stream: str) -> list[StreamEntry]:
    """Take over every entry pending in the group on this stream, oldest first."""
    client: Redis = processor.client
    claimed: list[StreamEntry] = []
    cursor: bytes | str = "0-0"
    while True:
        reply = await client.xautoclaim(
            stream, processor.group, processor.consumer, 0, cursor,
            count=processor.settings.read_count,
        )  # fmt: skip
        cursor = reply[0]
        rows = cast(list[tuple[bytes, Fields | None]], reply[1])
        gone = [entry_id for entry_id, fields in rows if fields is None]
        if gone:  # trimmed by MAXLEN before anyone handled them
            await client.xack(stream, processor.group, *gone)
            log.warning("%s: %d pending entries were trimmed away unhandled", stream, len(gone))
        claimed += [StreamEntry(stream, entry_id, f) for entry_id, f in rows if f is not None]
        if cursor in (b"0-0", "0-0"):
            processor.stats.claimed += len(claimed)
            return claimed


async def read_new(processor: EntryProcessor, streams: list[str]) -> list[StreamEntry]:
    """XREADGROUP '>' on the streams, blocking up to block_ms."""
    settings = processor.settings
    reply = await processor.client.xreadgroup(
        processor.group, processor.consumer, dict.fromkeys(streams, ">"),
        count=settings.read_count, block=settings.block_ms,
    )  # fmt: skip
    rows = cast(list[tuple[bytes, list[tuple[bytes, Fields]]]], reply or [])
    return [
        StreamEntry(stream.decode(), entry_id, fields)
        for stream, entries in rows
        for entry_id, fields in entries
    ]


@dataclass(eq=False)
class _Partition:
    """A held partition: its queue, its worker, and what its handlers hold unacknowledged."""

    number: int
    stream: str
    fence: Fence
    queue: asyncio.Queue[StreamEntry | None]
    ready: bool = False  # what the previous owner left pending comes first
    draining: bool = False
    worker: asyncio.Task[None] | None = None
    held: dict[str, list[Held]] = field(default_factory=dict)


class PartitionedReader:
    def __init__(self, processor: EntryProcessor, overflow: str, partitions: int) -> None:
        self.processor = processor
        self.overflow = overflow
        self.partitions = partitions
        self.topic_name = processor.topic.name
        self.parts: dict[int, _Partition] = {}
        self.name = f"{processor.group}/{self.topic_name}"
        # A command's keys must share a slot on a cluster: one read per partition there.
        self.read_each_partition = is_cluster(processor.client)

    async def ensure_groups(self) -> None:
        p = self.processor
        for number in range(self.partitions):
            stream = partition_stream(self.topic_name, number)
            await ensure_group(p.client, stream, p.group, p.settings.group_start)

    async def run(self) -> None:
        """Fetch new entries of the partitions held, for ever."""
        await resilient(self.name, self.ensure_groups, self.ensure_groups, repeat=False)
        try:
            await resilient(self.name, self._fetch, self.ensure_groups)
        finally:
            workers = [w for number in list(self.parts) if (w := self.stop(number)) is not None]
            await asyncio.gather(*workers, return_exceptions=True)

    def start(self, number: int, fence: Fence) -> None:
        self.stop(number)
        part = _Partition(
            number, partition_stream(self.topic_name, number), fence,
            asyncio.Queue(maxsize=self.processor.settings.queue_size),
        )  # fmt: skip
        part.worker = asyncio.create_task(self._work(part), name=f"{self.name}/p{number}")
        self.parts[number] = part

    def stop(self, number: int) -> asyncio.Task[None] | None:
        """Stop handling the partition at once (its lease is gone): what it read and did
        not acknowledge stays pending for the next owner. Returns the worker to await."""
        part = self.parts.pop(number, None)
        if part is None or part.worker is None:
            return None
        part.worker.cancel()
        return part.worker

    def drain(self, number: int) -> asyncio.Task[None] | None:
        """Finish the entry in hand, take no more (the partition is being handed over)."""
        part = self.parts.get(number)
        if part is None or part.worker is None:
            return None
        part.draining = True
        while not part.queue.empty():
            part.queue.get_nowait()
        part.queue.put_nowait(None)
        return part.worker

    async def _work(self, part: _Partition) -> None:
        p = self.processor
        name = f"{self.name}/p{part.number}"
        fetching: asyncio.Task[None] | None = None
        try:

            async def take_over() -> None:
                for entry in await claim_pending(p, part.stream):
                    if not await self._handle(part, entry):
                        return
                    raise_if_cancelling()
                part.ready = True

            await resilient(name, take_over, self.ensure_groups, repeat=False)
            if self.read_each_partition and part.ready:
                fetching = asyncio.create_task(
                    resilient(name, lambda: self._fetch_partition(part), self.ensure_groups),
                    name=f"{name}/fetch",
                )
            while part.ready:
                # redis-py can swallow a cancellation that lands inside a command (in the
                # take-over or a handler); without this check the worker would wait on its
                # queue until the stop times out.
                raise_if_cancelling()
                entry = await part.queue.get()
                if entry is None or not await self._handle(part, entry):
                    return
        finally:
            if fetching is not None:
                fetching.cancel()
            if self.parts.get(part.number) is part and not part.draining:
                self.parts.pop(part.number, None)

    async def _handle(self, part: _Partition, entry: StreamEntry) -> bool:
        """Process one entry through Redis outages; False when the partition is not ours."""
        backoff = Backoff(cap_s=0.2)
        while True:
            raise_if_cancelling()
            if not part.fence.held():
                log.warning(
                    "%s: lease on partition %d ran out; stopping it", self.name, part.number
                )
                return False
            try:
                await self.processor.process(entry, part.fence, part.held)
                return True
            except Fenced:
                log.warning("%s: partition %d was taken over; stopping it", self.name, part.number)
                return False
            except REDIS_UNAVAILABLE:
                raise_if_cancelling()
                await backoff.wait()

    async def _fetch(self) -> None:
        p, settings = self.processor, self.processor.settings
        ready = {part.stream: part for part in self.parts.values() if part.ready}
        if not ready or self.read_each_partition:
            await asyncio.sleep(settings.block_ms / 1000)
            return
        for entry in await read_new(p, list(ready)):
            await self._enqueue(ready[entry.stream], entry)

    async def _fetch_partition(self, part: _Partition) -> None:
        """One partition's new entries (on a cluster; a cancelled read leaves what it got
        pending in the group, for whoever owns the partition next to claim)."""
        for entry in await read_new(self.processor, [part.stream]):
            await self._enqueue(part, entry)

    async def _enqueue(self, part: _Partition, entry: StreamEntry) -> None:
        """Queue the entry for its partition's worker; a full queue waits (back-pressure) or,
        for audio, loses its oldest entry. An entry for a partition being let go is left
        pending in Redis for the next owner."""
        while self.parts.get(part.number) is part and not part.draining:
            if part.worker is None or part.worker.done():
                return
            if self.overflow == "drop_oldest" and part.queue.full():
                oldest = part.queue.get_nowait()
                if oldest is not None:
                    with contextlib.suppress(Fenced):
                        await self.processor.drop(oldest, part.fence)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(part.queue.put(entry), 0.2)
                return


class BroadcastReader:
    """Every entry of an unordered stream, on every replica: XREAD from where it started.

    On start it first reads back `history_ms` of the stream (handle(entry, replayed=True):
    interrupts are remembered, nothing else is done twice), then follows new entries."""

    def __init__(
        self,
        client: Redis,
        stream: str,
        handle: Callable[[StreamEntry, bool], Awaitable[None]],
        *,
        history_ms: int,
        block_ms: int,
        read_count: int,
        name: str,
    ) -> None:
        self.client = client
        self.stream = stream
        self.handle = handle
        self.history_ms = history_ms
        self.block_ms = block_ms
        self.read_count = read_count
        self.name = name
        self.last_id = b"$"

    async def run(self, started: asyncio.Event | None = None) -> None:
        async def nothing() -> None:
            return None

        await resilient(self.name, self._catch_up, nothing, repeat=False)
        if started is not None:
            started.set()
        await resilient(self.name, self._follow, nothing)

    async def _catch_up(self) -> None:
        seconds, micros = await self.client.time()
        start = max(0, seconds * 1000 + micros // 1000 - self.history_ms)
        # Where new entries begin: the stream's last entry now (none yet: 0).
        newest = cast(list[tuple[bytes, Fields]], await self.client.xrevrange(self.stream, count=1))
        self.last_id = newest[0][0] if newest else b"0-0"
        cursor = f"{start}-0".encode()
        while True:
            rows = cast(
                list[tuple[bytes, Fields]],
                await self.client.xrange(
                    self.stream, min=cursor, max=self.last_id, count=self.read_count
                ),
            )
            for entry_id, fields in rows:
                await self.handle(StreamEntry(self.stream, entry_id, fields), True)
            if len(rows) < self.read_count:
                return
            cursor = b"(" + rows[-1][0]

    async def _follow(self) -> None:
        reply = await self.client.xread(
            {self.stream: self.last_id}, count=self.read_count, block=self.block_ms
        )
        rows = cast(list[tuple[bytes, list[tuple[bytes, Fields]]]], reply or [])
        for _, entries in rows:
            for entry_id, fields in entries:
                self.last_id = entry_id
                await self.handle(StreamEntry(self.stream, entry_id, fields), False)
