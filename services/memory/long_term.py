"""Long-term memory in words: remember text, recall by meaning, and the operations on it.

Wraps a store (vectors) and the embedder (words to vectors): callers never see a vector.
The embedding and the store's blocking work run off the event loop.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.errors import ConfigError
from services.memory.embedder import DIMENSIONS, Embedder
from services.memory.items import LongTermBackupInfo, MemoryHit, MemoryItem, ScopeStats
from services.memory.settings import MemorySettings
from services.memory.store import LongTermStore, Vector

log = logging.getLogger("marionette.memory")


@dataclass(frozen=True)
class Recalled:
    """What a recall found, and what it cost."""

    hits: list[MemoryHit]
    elapsed_ms: float


class LongTermMemory:
    def __init__(
        self,
        store: LongTermStore,
        embedder: Embedder | Callable[[], Embedder],
        settings: MemorySettings,
    ) -> None:
        """embedder: the embedder, or how to make it on first use (the operators' tools
        list and export without loading a model)."""
        self.store = store
        self._embedder = embedder if isinstance(embedder, Embedder) else None
        self._make_embedder = embedder
        self._loading = asyncio.Lock()
        self.settings = settings

    @property
    def embedder(self) -> Embedder:
        """The embedder, once loaded (open_long_term loads it at once)."""
        if self._embedder is None:
            raise RuntimeError("the embedder is not loaded yet: await loaded() first")
        return self._embedder

    async def loaded(self) -> Embedder:
        """The embedder, made (off the event loop) on first use."""
        async with self._loading:
            if self._embedder is None:
                make = self._make_embedder
                assert callable(make)
                self._embedder = await asyncio.to_thread(make)
            return self._embedder

    async def embed(self, texts: Sequence[str]) -> Vector:
        embedder = await self.loaded()
        return await asyncio.to_thread(embedder.embed, list(texts))

    async def embed_one(self, text: str) -> Vector:
        embedder = await self.loaded()
        return await asyncio.to_thread(embedder.embed_one, text)

    async def remember(self, items: Sequence[MemoryItem]) -> int:
        """Store items (an item already stored is left alone); how many were new."""
        if not items:
            return 0
        return await self.store.add(items, await self.embed([i.text for i in items]))

    async def recall(
        self,
        scopes: Sequence[str],
        query: str,
        *,
        author: str | None = None,
        limit: int | None = None,
    ) -> Recalled:
        """The memories closest to query in meaning, best first; what the asking author
        said themselves gets a bonus (their "my cat" is theirs)."""
        started = time.perf_counter()
        limit = self.settings.recall_limit if limit is None else limit
        if limit == 0 or not query.strip():
            return Recalled([], 0.0)
        vector = await self.embed_one(query)
        floor = self.settings.recall_min_score - self.settings.author_bonus
        found = await self.store.search(scopes, vector, limit * 3, min_score=floor)
        bonus = self.settings.author_bonus

        def score(hit: MemoryHit) -> float:
            mine = author is not None and hit.item.author == author
            return hit.score + (bonus if mine else 0.0)

        ranked = sorted(found, key=score, reverse=True)
        hits = [
            MemoryHit(item=h.item, score=score(h))
            for h in ranked
            if score(h) >= self.settings.recall_min_score
        ][:limit]
        return Recalled(hits, (time.perf_counter() - started) * 1000)

    async def recall_within_budget(
        self, scopes: Sequence[str], query: str, *, author: str | None = None
    ) -> Recalled | None:
        """recall(), or None if it takes longer than the budget (the turn goes on
        without: a reply must not wait on memory)."""
        budget_s = self.settings.recall_budget_ms / 1000
        task = asyncio.ensure_future(self.recall(scopes, query, author=author))
        try:
            return await asyncio.wait_for(asyncio.shield(task), budget_s)
        except TimeoutError:
            log.warning("recall took over %.0f ms; this turn goes without", budget_s * 1000)
            return None

    # --- operations (gateway, CLI) -------------------------------------------------------

    async def export(self, scope: str) -> list[MemoryItem]:
        return await self.store.items(scope)

    async def import_items(self, items: Sequence[MemoryItem], batch: int = 64) -> int:
        """Store exported items (embedded again here: an export holds words, not vectors,
        so it survives a change of embedder). How many were new. Items stored already are
        not embedded again: re-importing an export costs a read, not a model run each."""
        stored = {scope: {i.id for i in await self.store.items(scope)}
                  for scope in {item.scope for item in items}}  # fmt: skip
        items = [item for item in items if item.id not in stored[item.scope]]
        added = 0
        for start in range(0, len(items), batch):
            added += await self.remember(items[start : start + batch])
        return added

    async def stats(self, scope: str) -> ScopeStats:
        return await self.store.stats(scope)

    async def scopes(self) -> list[str]:
        return await self.store.scopes()

    async def forget_author(self, author: str) -> int:
        return await self.store.delete_author(author)

    async def reset(self, scope: str) -> LongTermBackupInfo:
        return await self.store.reset(scope)

    async def backups(self, scope: str) -> list[LongTermBackupInfo]:
        return await self.store.backups(scope)

    async def restore(self, scope: str, backup_id: str) -> int:
        return await self.store.restore(scope, backup_id)

    async def close(self) -> None:
        await self.store.close()


def open_store(settings: MemorySettings, redis: object | None = None) -> LongTermStore:
    """The store the settings name. redis: the bus's client (the redis store's home); the
    sqlite store opens its file."""
    if settings.store == "redis":
        from redis.asyncio import Redis

        from services.memory.redis_store import RedisVectorStore

        if not isinstance(redis, Redis):
            raise ConfigError(
                "MARIONETTE_MEMORY_STORE=redis needs a single Redis, not a Redis Cluster "
                "(MARIONETTE_REDIS_CLUSTER=true): set MARIONETTE_MEMORY_STORE=sqlite"
            )
        return RedisVectorStore(redis, DIMENSIONS, backups_kept=settings.backups_kept)
    from services.memory.sqlite_store import SqliteVecStore

    return SqliteVecStore(settings.path, DIMENSIONS, backups_kept=settings.backups_kept)


def open_long_term(settings: MemorySettings, redis: object | None = None) -> LongTermMemory:
    """The store the settings name, with the embedder loaded (policy's: its first turn
    should not wait for the model)."""
    return LongTermMemory(open_store(settings, redis), Embedder(), settings)
