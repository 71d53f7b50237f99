"""Dead-letter streams: one per topic, holding what a stage gave up on, and why."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis

from services.bus.wire import REDRIVEN_FIELD, StreamEntry

DLQ_PREFIX = "dlq."
DLQ_MAXLEN = 10_000
_ORIGINAL = b"orig:"


def dead_letter_stream(topic_name: str) -> str:
    return f"{DLQ_PREFIX}{topic_name}"


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered entry as `marionette dlq list` shows it."""

    dlq_id: str
    topic: str
    reason: str
    delivery_count: int
    group: str
    consumer: str
    source_stream: str
    source_id: str
    failed_at: str
    original: dict[bytes, bytes]

    def as_json(self) -> dict[str, Any]:
        payload = self.original.get(b"__data__", b"")
        return {
            "dlq_id": self.dlq_id,
            "topic": self.topic,
            "reason": self.reason,
            "delivery_count": self.delivery_count,
            "group": self.group,
            "consumer": self.consumer,
            "source_stream": self.source_stream,
            "source_id": self.source_id,
            "failed_at": self.failed_at,
            "payload_bytes": len(payload),
            "payload_preview": payload[-200:].decode("utf-8", errors="replace"),
        }


def dead_letter_fields(
    entry: StreamEntry,
    *,
    topic_name: str,
    reason: str,
    delivery_count: int,
    group: str,
    consumer: str,
) -> dict[bytes, bytes | str | int]:
    fields: dict[bytes, bytes | str | int] = {
        b"topic": topic_name,
        b"reason": reason[:4000],
        b"delivery_count": delivery_count,
        b"group": group,
        b"consumer": consumer,
        b"source_stream": entry.stream,
        b"source_id": entry.entry_id,
        b"failed_at": datetime.now(UTC).isoformat(),
    }
    for key, value in entry.fields.items():
        if key != REDRIVEN_FIELD:
            fields[_ORIGINAL + key] = value
    return fields


def _parse(dlq_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    def text(key: bytes) -> str:
        return fields.get(key, b"").decode(errors="replace")

    return DeadLetter(
        dlq_id=dlq_id.decode(),
        topic=text(b"topic"),
        reason=text(b"reason"),
        delivery_count=int(fields.get(b"delivery_count", b"0")),
        group=text(b"group"),
        consumer=text(b"consumer"),
        source_stream=text(b"source_stream"),
        source_id=text(b"source_id"),
        failed_at=text(b"failed_at"),
        original={k[len(_ORIGINAL) :]: v for k, v in fields.items() if k.startswith(_ORIGINAL)},
    )


async def dead_letter_topics(client: Redis) -> list[str]:
    names = [key.decode() async for key in client.scan_iter(match=f"{DLQ_PREFIX}*", _type="stream")]
    return sorted(name.removeprefix(DLQ_PREFIX) for name in names)


async def list_dead_letters(client: Redis, topic_name: str, limit: int = 100) -> list[DeadLetter]:
    reply = await client.xrange(dead_letter_stream(topic_name), count=limit)
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], reply)
    return [_parse(dlq_id, fields) for dlq_id, fields in rows]


async def redrive(
    client: Redis, topic_name: str, dlq_ids: list[str] | None = None
) -> list[DeadLetter]:
    """Put dead letters back on the stream they came from, and remove them from the DLQ.

    A re-driven entry is processed even if a newer message of its session was handled
    since, so it skips the duplicate check once.
    """
    letters = await list_dead_letters(client, topic_name, limit=DLQ_MAXLEN)
    if dlq_ids is not None:
        wanted = set(dlq_ids)
        letters = [letter for letter in letters if letter.dlq_id in wanted]
    for letter in letters:
        async with client.pipeline(transaction=True) as pipe:
            fields: dict[bytes, bytes] = {**letter.original, REDRIVEN_FIELD: b"1"}
            pipe.xadd(letter.source_stream, fields)  # type: ignore[arg-type]
            pipe.xdel(dead_letter_stream(topic_name), letter.dlq_id)
            await pipe.execute()
    return letters
