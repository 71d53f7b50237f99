"""The read loops: they fetch entries from Redis and hand them to an EntryProcessor.

SharedReader serves unordered topics: every replica reads the one stream in the same
consumer group, and claims what a dead replica left pending.
PartitionedReader serves ordered topics: each replica reads only the partitions it holds
a lease on, one at a time per partition, so a session's messages stay in order.
Neither loop ever stops on an error: it backs off briefly and tries again.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

from redis.asyncio import Redis

from services.bus.delivery import EntryProcessor
from services.bus.leases import PartitionLeases
from services.bus.partitions import partition_stream
from services.bus.recovery import (
    TRANSIENT_ERRORS,
    Backoff,
    ensure_group,
    is_missing_group,
    raise_if_cancelling,
)
from services.bus.wire import StreamEntry

log = logging.getLogger("marionette.bus")

Fields = dict[bytes, bytes]
STOP_GRACE_S = 10.0


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
                await _quietly(recreate_groups)
                continue
            if not failing:
                level = logging.WARNING if isinstance(exc, TRANSIENT_ERRORS) else logging.ERROR
                log.log(level, "%s: %s: %s; retrying", name, type(exc).__name__, exc)
            failing = True
            await backoff.wait()


async def _quietly(action: Step) -> None:
    try:
        await action()
    except Exception as exc:
        log.warning("recovery step failed (%s); will retry", exc)


async def claim_pending(
    processor: EntryProcessor, stream: str, min_idle_ms: int, count: int
) -> list[StreamEntry]:
    """Take over entries idle at least min_idle_ms, oldest first, with their delivery counts."""
    client: Redis = processor.client
    claimed: list[StreamEntry] = []
    cursor: bytes | str = "0-0"
    while True:
        reply = await client.xautoclaim(
            stream, processor.group, processor.consumer, min_idle_ms, cursor, count=count
        )
        cursor = reply[0]
        rows = cast(list[tuple[bytes, Fields | None]], reply[1])
        live = [(entry_id, fields) for entry_id, fields in rows if fields is not None]
        gone = [entry_id for entry_id, fields in rows if fields is None]
        if gone:  # trimmed by MAXLEN before anyone handled them
            await client.xack(stream, processor.group, *gone)
            log.warning("%s: %d pending entries were trimmed away unhandled", stream, len(gone))
        if live:
            counts = await _delivery_counts(processor, stream, live[0][0], live[-1][0])
            claimed += [
                StreamEntry(stream, entry_id, fields, counts.get(entry_id, 1))
                for entry_id, fields in live
            ]
        if cursor in (b"0-0", "0-0"):
            processor.stats.claimed += len(claimed)
            return claimed


async def _delivery_counts(
    processor: EntryProcessor, stream: str, first: bytes, last: bytes
) -> dict[bytes, int]:
    rows = await processor.client.xpending_range(
        stream, processor.group, min=first, max=last, count=10_000,
        consumername=processor.consumer,
    )  # fmt: skip
    return {cast(bytes, row["message_id"]): int(row["times_delivered"]) for row in rows}


async def process_resiliently(processor: EntryProcessor, entry: StreamEntry) -> None:
    """Process one entry, waiting out a Redis outage and then trying the same entry again."""

    async def step() -> None:
        await processor.process(entry)

    async def recreate() -> None:
        await ensure_group(
            processor.client, entry.stream, processor.group, processor.settings.group_start
        )

    name = f"{processor.group}/{entry.stream}"
    await resilient(name, step, recreate, repeat=False)


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


class SharedReader:
    def __init__(self, processor: EntryProcessor, stream: str) -> None:
        self.processor = processor
        self.stream = stream
        self._next_claim = 0.0

    async def _ensure_group(self) -> None:
        p = self.processor
        await ensure_group(p.client, self.stream, p.group, p.settings.group_start)

    async def run(self) -> None:
        name = f"{self.processor.group}/{self.stream}"
        await resilient(name, self._ensure_group, self._ensure_group, repeat=False)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.processor.keep_claimed())
            await resilient(name, self._step, self._ensure_group)

    async def _step(self) -> None:
        p, settings = self.processor, self.processor.settings
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + settings.claim_idle_ms / 2000
            claimed = await claim_pending(
                p, self.stream, settings.claim_idle_ms, settings.read_count
            )
            for entry in claimed:
                await process_resiliently(p, entry)
        for entry in await read_new(p, [self.stream]):
            await process_resiliently(p, entry)


class _Partition:
    """A held partition: its bounded queue and the worker that drains it in order."""

    def __init__(self, number: int, stream: str, queue_size: int) -> None:
        self.number = number
        self.stream = stream
        self.queue: asyncio.Queue[StreamEntry | None] = asyncio.Queue(maxsize=queue_size)
        self.ready = False  # pending entries of the previous owner are handled first
        self.worker: asyncio.Task[None] | None = None


class PartitionedReader:
    def __init__(self, processor: EntryProcessor, leases: PartitionLeases, overflow: str) -> None:
        self.processor = processor
        self.leases = leases
        self.overflow = overflow
        self.topic_name = processor.topic.name
        self.held: dict[int, _Partition] = {}
        self.name = f"{processor.group}/{self.topic_name}"

    async def _ensure_groups(self) -> None:
        p = self.processor
        for number in range(self.leases.partitions):
            stream = partition_stream(self.topic_name, number)
            await ensure_group(p.client, stream, p.group, p.settings.group_start)

    async def run(self) -> None:
        await resilient(self.name, self._ensure_groups, self._ensure_groups, repeat=False)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.processor.keep_claimed())
                tasks.create_task(self._lease_loop())
                await resilient(self.name, self._fetch, self._ensure_groups)
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Finish in-flight entries and hand the partitions back at once."""
        for number in list(self.held):
            await self._stop(number)
        with contextlib.suppress(*TRANSIENT_ERRORS):  # else the leases expire on their own
            await self.leases.release_all()

    async def _lease_loop(self) -> None:
        interval_s = self.leases.lease_ms / 3000
        while True:
            await resilient(
                self.name + "/leases", self._lease_step, self._ensure_groups, repeat=False
            )
            await asyncio.sleep(interval_s)

    async def _lease_step(self) -> None:
        changes = await self.leases.tick()
        for number in changes.lost:
            log.warning("%s: lost the lease on partition %d", self.name, number)
            await self._stop(number)
        for number in changes.surplus:
            await self._stop(number)
            await self.leases.release(number)
        for number in sorted(changes.gained):
            self._start(number)
        if changes.gained or changes.lost or changes.surplus:
            log.info(
                "%s: %s holds partitions %s", self.name, self.leases.replica_id, sorted(self.held)
            )

    def _start(self, number: int) -> None:
        partition = _Partition(
            number, partition_stream(self.topic_name, number), self.processor.settings.queue_size
        )
        partition.worker = asyncio.create_task(self._work(partition))
        self.held[number] = partition

    async def _stop(self, number: int) -> None:
        partition = self.held.pop(number, None)
        if partition is None or partition.worker is None:
            return
        # Entries still queued stay pending in Redis; the next owner claims them.
        while not partition.queue.empty():
            partition.queue.get_nowait()
        partition.queue.put_nowait(None)
        # Let the entry in hand finish; a worker stuck waiting for Redis is cancelled.
        _, stuck = await asyncio.wait([partition.worker], timeout=STOP_GRACE_S)
        for task in stuck:
            task.cancel()
        await asyncio.gather(partition.worker, return_exceptions=True)

    async def _work(self, partition: _Partition) -> None:
        p = self.processor

        async def take_over() -> None:
            for entry in await claim_pending(p, partition.stream, 0, p.settings.read_count):
                await process_resiliently(p, entry)
            partition.ready = True

        name = f"{self.name}/p{partition.number}"
        await resilient(name, take_over, self._ensure_groups, repeat=False)
        while (entry := await partition.queue.get()) is not None:
            await process_resiliently(p, entry)

    async def _fetch(self) -> None:
        p, settings = self.processor, self.processor.settings
        ready = {part.stream: part for part in self.held.values() if part.ready}
        if not ready:
            await asyncio.sleep(settings.block_ms / 1000)
            return
        for entry in await read_new(p, list(ready)):
            await self._enqueue(ready[entry.stream], entry)

    async def _enqueue(self, partition: _Partition, entry: StreamEntry) -> None:
        if self.held.get(partition.number) is not partition:
            return  # released meanwhile: the entry stays pending for the next owner
        if self.overflow == "drop_oldest" and partition.queue.full():
            oldest = partition.queue.get_nowait()
            if oldest is not None:
                await self.processor.drop(oldest)
        await partition.queue.put(entry)
