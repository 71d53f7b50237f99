"""Checkpointed stage state in Redis: a pydantic model per (session, key), cached in memory.

The replica that owns a session's partition is the only one that changes its state, so
the cache is the truth while the partition is held; it is dropped when the partition goes.
A changed value is written with the handler's next fenced write (services.bus.delivery),
so what is stored always matches what was published.
"""

from typing import Generic, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis

from services.bus.delivery import current_delivery
from services.bus.partitions import partition_of, session_tag

S = TypeVar("S", bound=BaseModel)


class RedisState(Generic[S]):
    def __init__(
        self,
        client: Redis,
        *,
        group: str,
        name: str,
        model: type[S],
        partitions: int,
    ) -> None:
        self._client = client
        self._prefix = f"marionette:state:{group}:{name}"
        self.model = model
        self.partitions = partitions
        self._cache: dict[str, S | None] = {}
        self._sessions: dict[str, str] = {}  # key -> its session, to drop by partition

    def _key(self, session_id: str, key: str) -> str:
        return f"{self._prefix}:{session_tag(session_id, self.partitions)}:{session_id}:{key}"

    async def load(self, session_id: str, key: str = "") -> S | None:
        redis_key = self._key(session_id, key)
        delivery = current_delivery.get()
        if delivery is not None:
            delivery.touched.add(redis_key)
        if redis_key in self._cache:
            return self._cache[redis_key]
        raw = await self._client.get(redis_key)
        value = None if raw is None else self.model.model_validate_json(raw)
        self._cache[redis_key] = value
        self._sessions[redis_key] = session_id
        return value

    def save(self, session_id: str, key: str, value: S) -> None:
        """Store it with the handler's next write. Outside a handler (a control message, a
        background task) it changes the value in memory, stored with the next handler's
        save of it."""
        redis_key = self._key(session_id, key)
        self._cache[redis_key] = value
        self._sessions[redis_key] = session_id
        delivery = current_delivery.get()
        if delivery is not None and not delivery.closed:
            delivery.touched.add(redis_key)
            delivery.state[redis_key] = value

    def forget(self, session_id: str, key: str = "") -> None:
        """Delete it (with the next write, inside a handler; from the cache, outside one)."""
        redis_key = self._key(session_id, key)
        self._cache[redis_key] = None
        delivery = current_delivery.get()
        if delivery is not None and not delivery.closed:
            delivery.touched.add(redis_key)
            delivery.state[redis_key] = None

    def drop_cached(self, keys: set[str]) -> None:
        """Forget cached values a failed handler may have changed; Redis has the truth."""
        for key in keys:
            self._cache.pop(key, None)

    def drop_partition(self, partition: int) -> None:
        for key, session in list(self._sessions.items()):
            if partition_of(session, self.partitions) == partition:
                self._cache.pop(key, None)
                del self._sessions[key]
