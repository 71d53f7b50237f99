"""Reading what stages published, straight from the streams, for assertions."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from contracts.chat import ChatMessage
from contracts.envelope import Envelope
from contracts.topics import Topic
from services.bus.ownership import lease_key
from services.bus.partitions import streams_of
from services.bus.wire import StreamEntry, decode_entry
from services.replay.diff import word_error_rate

__all__ = [
    "partition_owners",
    "read_topic",
    "viewer_chat",
    "wait_until",
    "word_error_rate",
]


async def read_topic(client: Redis, topic: Topic[Any], partitions: int) -> list[Envelope]:
    """Every message on the topic, in stream order within each partition."""
    messages: list[Envelope] = []
    for stream in streams_of(topic, partitions):
        for entry_id, fields in await client.xrange(stream):
            entry = StreamEntry(stream, entry_id, fields)
            messages.append(decode_entry(entry, topic, 10**8).envelope)
    return messages


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await condition():
                return
        except RedisConnectionError:
            pass  # the test's own connection saw a Redis restart; ask again

        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def viewer_chat(session: str, seq: int) -> ChatMessage:
    """Chat line number `seq` of a viewer whose session is `session`."""
    return ChatMessage(
        session_id=session, turn_id="t1", seq=seq,
        platform="twitch", author=session, text=f"message {seq}",
    )  # fmt: skip


async def partition_owners(client: Redis, group: str) -> dict[int, str]:
    """Which replica holds each partition of a stage's group now, read from the lease keys
    (`lease_key(group, partition)` holding "<replica>#<epoch>.<nonce>")."""
    owners: dict[int, str] = {}
    for partition in range(256):  # BusSettings.partitions is at most 256
        value = await client.get(lease_key(group, partition))
        if value is not None:
            owners[partition] = value.decode().partition("#")[0]
    return owners
