"""Which stream a message goes to: ordered topics are split by a hash of the session id."""

import zlib
from typing import Any

from contracts.envelope import Envelope
from contracts.topics import ALL_TOPICS, Topic


def partition_of(session_id: str, partitions: int) -> int:
    # crc32, not hash(): every process and language must agree on the partition.
    return zlib.crc32(session_id.encode()) % partitions


def partition_stream(topic_name: str, partition: int) -> str:
    return f"{topic_name}.p{partition}"


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
    """The topic a stream carries (`audio.frame.p3` -> audio.frame), None for other streams."""
    for topic in ALL_TOPICS:
        if stream == topic.name:
            return topic
        suffix = stream.removeprefix(f"{topic.name}.p")
        if topic.ordered and suffix != stream and suffix.isdigit():
            return topic
    return None
