"""Redis for a process tree: REDIS_URL when set, else an embedded server for its lifetime.

The one way Marionette's commands start an embedded Redis. `marionette up` keeps its data
(MARIONETTE_REDIS_DIR, .marionette/redis by default, an append-only file fsynced on every
write), so memory, persona and unfinished turns survive a restart of `up`; tools that only
need a Redis for a while (bench, a single `marionette run`) use a temporary folder.
"""

import contextlib
from collections.abc import Iterator

from services.bus.redis_server import EmbeddedRedis
from services.bus.settings import BusSettings


@contextlib.contextmanager
def redis_for(settings: BusSettings, *, keep_data: bool = False) -> Iterator[BusSettings]:
    """Yield settings whose redis_url points at a live Redis."""
    if settings.redis_url:
        yield settings
        return
    server = EmbeddedRedis(
        binary=settings.redis_server,
        data_dir=settings.redis_dir if keep_data else None,
        persistence=keep_data,
    )
    with server:
        yield settings.model_copy(update={"redis_url": server.url})
