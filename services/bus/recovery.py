"""What the runtime does when Redis misbehaves: short backoff, reconnect, recreate groups."""

import asyncio
import logging
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("marionette.bus")

REDIS_UNAVAILABLE: Final = (RedisConnectionError, RedisTimeoutError)
"""Redis is down or restarting (BusyLoadingError, Redis replaying its AOF, is one of these)."""
TRANSIENT_ERRORS: Final = (*REDIS_UNAVAILABLE, OSError)
"""Errors that a reconnect fixes."""


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library turned into an ordinary error.

    redis-py can surface a cancelled blocking read as a connection or timeout error; a
    retry loop that caught it would keep a stopping stage alive forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def is_missing_group(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


class Backoff:
    """Exponential delay with a low cap: recover within about a second, never a fixed 5 s."""

    def __init__(self, first_s: float = 0.05, cap_s: float = 1.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self._next_s = first_s

    async def wait(self) -> None:
        await asyncio.sleep(self._next_s)
        self._next_s = min(self._next_s * 2, self.cap_s)

    def reset(self) -> None:
        self._next_s = self.first_s


async def ensure_group(client: Redis, stream: str, group: str, start_id: str) -> None:
    """Create the consumer group (and the stream) unless it exists."""
    try:
        await client.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
