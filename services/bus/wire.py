"""Stream entries as they sit in Redis, and their decoding into checked messages.

FastStream stores a message as one field, `__data__`, holding its binary envelope
(headers, then the JSON body). This module reads that format for the runtime and for
outside tools (dead-letter listing, benchmarks) without going through a subscriber.
"""

import time
from dataclasses import dataclass, field
from typing import Any

from faststream.redis.parser.binary import BinaryMessageFormatV1
from pydantic import ValidationError

from contracts.envelope import Envelope
from contracts.topics import Topic

DATA_FIELD = b"__data__"
REDRIVEN_FIELD = b"marionette-redriven"
"""Marks an entry re-driven from dead letters: it skips the duplicate check once."""


def entry_time(entry_id: bytes | str) -> float:
    """When Redis added an entry (Unix s): the milliseconds at the front of its id."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0]) / 1000


def entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """An entry id as a sortable pair (ids compare as numbers, not as text)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class MalformedMessage(ValueError):
    """An entry that no retry can fix: it goes to dead letters with this reason."""


@dataclass(frozen=True)
class StreamEntry:
    """One entry read from a stream, with how often it has been delivered."""

    stream: str
    entry_id: bytes
    fields: dict[bytes, bytes]
    delivery_count: int = 1
    read_at: float = field(default_factory=time.time)

    @property
    def size(self) -> int:
        return sum(len(k) + len(v) for k, v in self.fields.items())

    @property
    def redriven(self) -> bool:
        return REDRIVEN_FIELD in self.fields


@dataclass(frozen=True)
class DecodedMessage:
    envelope: Envelope
    headers: dict[str, Any] = field(default_factory=dict)


def split_envelope(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """FastStream's binary envelope -> (body, headers)."""
    if not data.startswith(BinaryMessageFormatV1.IDENTITY_HEADER):
        raise MalformedMessage(
            "not a FastStream message: the __data__ field lacks the binary envelope header"
        )
    try:
        body, headers = BinaryMessageFormatV1.parse(data)
    except Exception as exc:
        raise MalformedMessage(f"corrupt FastStream envelope: {exc}") from None
    if body.startswith(BinaryMessageFormatV1.IDENTITY_HEADER):
        # FastStream's parser hands back the raw bytes when it cannot read the envelope.
        raise MalformedMessage("corrupt FastStream envelope: its offsets point past the data")
    return body, headers


def format_validation_error(topic_name: str, exc: ValidationError) -> str:
    """A pydantic error as one readable line: 'invalid audio.frame: pcm: ...'."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return f"invalid {topic_name}: " + "; ".join(parts)


def decode_entry(entry: StreamEntry, topic: Topic[Any], max_bytes: int) -> DecodedMessage:
    """Check an entry against its topic's contract, or raise MalformedMessage with the reason."""
    if entry.size > max_bytes:
        raise MalformedMessage(
            f"entry of {entry.size} bytes exceeds MARIONETTE_MAX_MESSAGE_BYTES={max_bytes}"
        )
    data = entry.fields.get(DATA_FIELD)
    if data is None:
        names = ", ".join(k.decode(errors="replace") for k in entry.fields) or "none"
        raise MalformedMessage(f"not a FastStream message: no __data__ field (fields: {names})")
    body, headers = split_envelope(data)
    try:
        envelope = topic.model.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedMessage(format_validation_error(topic.name, exc)) from None
    return DecodedMessage(envelope=envelope, headers=headers)
