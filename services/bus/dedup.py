"""Dropping duplicates by (session, turn, seq), so a redelivery never has an effect twice.

Ordered topics deliver a session's messages in order to one consumer, so a high-water
mark per (session, turn) is enough and stays small (audio frames arrive 50 a second).
Unordered topics remember each handled message id for a while.
"""

from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from contracts.envelope import Envelope

KEY_PREFIX = "marionette:seen"

# Raise the mark, never lower it: a late duplicate must not reopen older seqs.
_RAISE_MARK = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class Deduplicator(Protocol):
    async def is_duplicate(self, envelope: Envelope) -> bool: ...

    def mark_handled(self, pipe: Pipeline, envelope: Envelope) -> None:
        """Queue the 'handled' mark in the pipeline that also acknowledges the entry."""


class _RedisDeduplicator:
    def __init__(self, client: Redis, group: str, topic_name: str, ttl_s: int) -> None:
        self._client = client
        self._prefix = f"{KEY_PREFIX}:{group}:{topic_name}"
        self._ttl_s = ttl_s


class HighWaterMarks(_RedisDeduplicator):
    def _key(self, envelope: Envelope) -> str:
        return f"{self._prefix}:{envelope.session_id}"

    async def is_duplicate(self, envelope: Envelope) -> bool:
        mark = await self._client.hget(self._key(envelope), envelope.turn_id or "")
        return mark is not None and int(mark) >= envelope.seq

    def mark_handled(self, pipe: Pipeline, envelope: Envelope) -> None:
        pipe.eval(
            _RAISE_MARK, 1, self._key(envelope), envelope.turn_id or "", envelope.seq, self._ttl_s
        )


class HandledIds(_RedisDeduplicator):
    def _key(self, envelope: Envelope) -> str:
        return f"{self._prefix}:{envelope.dedup_key}"

    async def is_duplicate(self, envelope: Envelope) -> bool:
        return bool(await self._client.exists(self._key(envelope)))

    def mark_handled(self, pipe: Pipeline, envelope: Envelope) -> None:
        pipe.set(self._key(envelope), 1, ex=self._ttl_s)
