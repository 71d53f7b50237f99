"""Which stream a message goes to: ordered topics are split by a hash of the session id.

A partition's streams are named `<topic>.{p<N>}`: the braces are a Redis Cluster hash tag,
so every stream of partition N, and every key the bus keeps for it (leases, epochs, dedup
marks, state: `partition_tag`, `session_tag`), hashes to one slot. A fenced write (one Lua
script over all of them) then runs on one node of a cluster as on a single server.
"""

import zlib
from typing import Any

from contracts.envelope import Envelope
from contracts.topics import ALL_TOPICS, Topic


def partition_of(session_id: str, partitions: int) -> int:
    # crc32, not hash(): every process and language must agree on the partition.
    return zlib.crc32(session_id.encode()) % partitions


def partition_tag(partition: int) -> str:
    """`{p3}`: the hash tag of partition 3 (Redis Cluster hashes only what is in braces)."""
    return f"{{p{partition}}}"


def session_tag(session_id: str, partitions: int) -> str:
    """The hash tag of the session's partition: for keys kept per session."""
    return partition_tag(partition_of(session_id, partitions))


def partition_stream(topic_name: str, partition: int) -> str:
    return f"{topic_name}.{partition_tag(partition)}"


def stream_for(topic: Topic[Any], session_id: str, partitions: int) -> str:
    if not topic.ordered:
        return topic.name
    return partition_stream(topic.name, partition_of(session_id, partitions))


def streams_of(topic: Topic[Any], partitions: int) -> list[str]:
    """Every stream that carries this topic."""
    if not topic.ordered:
        return [topic.name]
    return [partition_stream(topic.name, p) for p in range(partitions)]


def topic_of_stream(stream: str) -> Topic[Envelope] | None:
    """The topic a stream carries (`audio.frame.{p3}` -> audio.frame), None for other streams.
    Recordings made before the hash tags name streams `audio.frame.p3`: read those too."""
    for topic in ALL_TOPICS:
        if stream == topic.name:
            return topic
        suffix = stream.removeprefix(f"{topic.name}.")
        if not topic.ordered or suffix == stream:
            continue
        number = suffix[2:-1] if suffix.startswith("{p") and suffix.endswith("}") else suffix[1:]
        if suffix[:1] in ("p", "{") and number.isdigit():
            return topic
    return None
