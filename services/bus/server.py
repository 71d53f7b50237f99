"""Redis for a process tree: REDIS_URL when set, else an embedded server for its lifetime."""

import contextlib
from collections.abc import Iterator

from services.bus.redis_server import EmbeddedRedis
from services.bus.settings import BusSettings


@contextlib.contextmanager
def redis_for(settings: BusSettings, *, persistence: bool = False) -> Iterator[BusSettings]:
    """Yield settings whose redis_url points at a live Redis."""
    if settings.redis_url:
        yield settings
        return
    with EmbeddedRedis(binary=settings.redis_server, persistence=persistence) as server:
        yield settings.model_copy(update={"redis_url": server.url})
