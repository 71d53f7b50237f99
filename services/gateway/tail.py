"""Following topics as they are written, from now or from a position: what /ws/events,
the NPC dialogue and the remote speaker read.

The gateway reads streams with plain XREAD (no consumer group): it only watches, so it
takes nothing from the stages and any number of gateways can watch at once. On a Redis
Cluster one XREAD cannot span slots: each slot's streams are read by a loop of their own.

A position is `<stream>/<entry id>` (`policy.token.{p3}/1732950000000-0`). Ids only order
entries of one stream, so resuming from a position goes on after it in its own stream
and from the start of its millisecond in every other one: nothing written after it is
missed, and what comes twice (an entry of another stream in that same millisecond) has
the same position, so a client can tell.
"""

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.crc import key_slot

from contracts.envelope import Envelope
from contracts.topics import Topic
from services.bus.connect import is_cluster
from services.bus.partitions import stream_for, streams_of
from services.bus.wire import MalformedMessage, StreamEntry, decode_entry, entry_order

DECODED_KEPT = 4096
Rows = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


class BadPosition(ValueError):
    """A `since` that is not `<stream>/<ms>-<seq>` or `<ms>-<seq>`."""


@dataclass(frozen=True)
class StreamEvent:
    """One message read from a topic, with the position to resume after it."""

    topic: Topic[Any]
    stream: str
    entry_id: str
    message: Envelope

    @property
    def position(self) -> str:
        return f"{self.stream}/{self.entry_id}"

    @property
    def order(self) -> tuple[int, int]:
        return entry_order(self.entry_id)


def parse_position(since: str) -> tuple[str | None, tuple[int, int]]:
    """`<stream>/<ms>-<seq>` or a bare `<ms>-<seq>` (then: after it in every stream)."""
    stream, _, entry_id = since.rpartition("/")
    ms, dash, seq = entry_id.partition("-")
    if not ms.isdigit() or (dash and not seq.isdigit()):
        raise BadPosition(
            f"since={since!r} is not a position: give an event's `position` "
            "(<stream>/<ms>-<seq>) or an entry id (<ms>-<seq>)"
        )
    return stream or None, (int(ms), int(seq or 0))


class StreamTail:
    """Reads topics from Redis for watchers: `async for event in tail.follow(...)`."""

    def __init__(self, client: Redis, partitions: int, max_message_bytes: int) -> None:
        self.client = client
        self.partitions = partitions
        self.max_message_bytes = max_message_bytes
        # Many watchers read the same entries (50 overlays on one stream): each entry is
        # checked against its contract once, not once per watcher.
        self._decoded: OrderedDict[tuple[str, bytes], Envelope | None] = OrderedDict()

    def streams(self, topics: Sequence[Topic[Any]], session: str | None) -> dict[str, Topic[Any]]:
        """The streams that carry these topics (for one session: only its partition)."""
        found: dict[str, Topic[Any]] = {}
        for topic in topics:
            names = (
                [stream_for(topic, session, self.partitions)]
                if session
                else streams_of(topic, self.partitions)
            )
            found.update(dict.fromkeys(names, topic))
        return found

    async def newest(self, streams: Sequence[str]) -> dict[str, str]:
        """Each stream's last entry id ("0-0" when empty): following from here is "from now"."""
        pipe = self.client.pipeline(transaction=False)
        for stream in streams:
            pipe.xrevrange(stream, count=1)
        rows = await pipe.execute()
        return {
            stream: (found[0][0].decode() if found else "0-0")
            for stream, found in zip(streams, rows, strict=True)
        }

    async def starts(self, streams: Sequence[str], since: str | None) -> dict[str, str]:
        """Where to start reading each stream (exclusive, as XREAD takes it)."""
        if since is None:
            return await self.newest(streams)
        stream_of_since, (ms, seq) = parse_position(since)
        before_ms = f"{ms - 1}-18446744073709551615" if ms > 0 else "0-0"
        return {
            stream: (f"{ms}-{seq}" if stream_of_since in (None, stream) else before_ms)
            for stream in streams
        }

    async def latest(
        self, topic: Topic[Any], session: str, count: int
    ) -> AsyncIterator[StreamEvent]:
        """The session's newest messages of a topic, newest first (at most `count` entries
        of its stream are looked at)."""
        stream = stream_for(topic, session, self.partitions)
        rows = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await self.client.xrevrange(stream, count=count)
        )
        for entry_id, fields in rows:
            event = self.decode(topic, stream, entry_id, fields, session)
            if event is not None:
                yield event

    async def follow(
        self,
        topics: Sequence[Topic[Any]],
        *,
        session: str | None = None,
        since: str | None = None,
        block_ms: int = 1000,
        starts: dict[str, str] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Every message of these topics (of one session) written after `since` (default:
        from now), as it comes; forever. Malformed entries are skipped (the stages
        dead-letter them). `starts`: positions taken earlier with `starts()`, so that
        nothing written between taking them and following is missed."""
        streams = self.streams(topics, session)
        positions = starts if starts is not None else await self.starts(list(streams), since)
        reads = (
            self._read_by_slot(positions, block_ms)
            if is_cluster(self.client)
            else self._read(positions, block_ms)
        )
        async for rows in reads:
            for raw_stream, entries in rows:
                stream = raw_stream.decode()
                topic = streams[stream]
                for entry_id, fields in entries:
                    event = self.decode(topic, stream, entry_id, fields, session)
                    if event is not None:
                        yield event
            await asyncio.sleep(0)  # let other watchers in between two full reads

    async def _read(self, positions: dict[str, str], block_ms: int) -> AsyncIterator[Rows]:
        """XREAD from the positions, moving them on, forever."""
        while True:
            rows = cast(
                Rows, await self.client.xread(cast(Any, positions), block=block_ms, count=200) or []
            )
            for raw_stream, entries in rows:
                if entries:
                    positions[raw_stream.decode()] = entries[-1][0].decode()
            yield rows

    async def _read_by_slot(self, positions: dict[str, str], block_ms: int) -> AsyncIterator[Rows]:
        """_read per slot, all at once (a cluster); a failing read ends the whole."""
        by_slot: dict[int, dict[str, str]] = {}
        for stream, position in positions.items():
            by_slot.setdefault(key_slot(stream.encode()), {})[stream] = position
        found: asyncio.Queue[Rows | BaseException] = asyncio.Queue(maxsize=len(by_slot) * 2)

        async def pump(group: dict[str, str]) -> None:
            try:
                async for rows in self._read(group, block_ms):
                    if rows:
                        await found.put(rows)
            except Exception as exc:
                await found.put(exc)

        pumps = [asyncio.create_task(pump(group)) for group in by_slot.values()]
        try:
            while True:
                item = await found.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in pumps:
                task.cancel()

    def decode(
        self, topic: Topic[Any], stream: str, entry_id: bytes, fields: dict[bytes, bytes],
        session: str | None,
    ) -> StreamEvent | None:  # fmt: skip
        key = (stream, entry_id)
        if key in self._decoded:
            message = self._decoded[key]
        else:
            try:
                message = decode_entry(
                    StreamEntry(stream, entry_id, fields), topic, self.max_message_bytes
                ).envelope
            except MalformedMessage:
                message = None
            self._decoded[key] = message
            if len(self._decoded) > DECODED_KEPT:
                self._decoded.popitem(last=False)
        if message is None:
            return None
        if session is not None and message.session_id != session:
            return None  # another session of the same partition
        return StreamEvent(topic, stream, entry_id.decode(), message)
