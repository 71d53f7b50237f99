"""The shared long-term store: any Redis or Valkey (no search module), for many machines.

Keys (under `marionette:memory:lt:`; `{scope}` is a Redis Cluster hash tag, so one scope's
keys share a slot and each write is one script or MULTI transaction):

- `{scope}:items`: hash, item id -> the item's JSON;
- `{scope}:vectors`: hash, item id -> its vector, raw float32 bytes;
- `{scope}:meta`: hash; `version` goes up on every write, `epoch` on every reset and
  restore (the scope's items were replaced wholesale);
- `{scope}:log`: stream, the ids each version added or deleted (the last LOG_LENGTH);
- `{scope}:backups`: list of backup ids, newest first; `{scope}:backup:<id>`: hash with
  `info` (LongTermBackupInfo JSON) and `items` (items and vectors, as in the sqlite store);
- `scopes`: set of every scope ever written (scopes() keeps those that hold items);
- `snapshot:<session_id>`: a session's short-term memory; `snapshots`: set of sessions.

Search is brute force in numpy over a per-scope copy of the items and vectors kept in this
process. A search first reads each scope's version and epoch (one round trip for all its
scopes). The copy is reloaded whole only when the epoch moved (or it fell behind the log);
when only the version moved, the log since its version says which ids to fetch and which
to drop; this process's own writes are applied to it directly.
"""

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, cast

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import WatchError

from services.memory.items import LongTermBackupInfo, MemoryHit, MemoryItem, ScopeStats
from services.memory.sqlite_store import (
    as_matrix,
    as_query,
    decode_backup,
    encode_backup,
    new_backup_info,
)
from services.memory.store import Vector

PREFIX = "marionette:memory:lt:"
LOG_LENGTH = 1_000  # changes kept per scope; a copy further behind is reloaded whole
LogEntries = list[tuple[bytes, dict[bytes, bytes]]]  # (stream id, {item id: + or -})
SCRIPT_BATCH = 500  # ids per script call (Lua's unpack() takes a few thousand at most)

# Writes are scripts: the items, the version and the change log move together. KEYS:
# items, vectors, meta, log; ARGV[1]: the log's length. Returns version, epoch, and the
# ids that changed. The log entry of version V has stream id V-0, its fields the ids and
# its values + (added) or - (deleted).
_LOG = """
local function logged(ids, change)
  local epoch = tonumber(redis.call('HGET', KEYS[3], 'epoch') or '0')
  if #ids == 0 then
    return {tonumber(redis.call('HGET', KEYS[3], 'version') or '0'), epoch}
  end
  local version = redis.call('HINCRBY', KEYS[3], 'version', 1)
  local entry = {}
  for _, id in ipairs(ids) do
    entry[#entry + 1] = id
    entry[#entry + 1] = change
  end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[1], version .. '-0', unpack(entry))
  return {version, epoch, unpack(ids)}
end
"""
# ARGV[2..]: id, item JSON, vector, for each item; an id already stored is left alone.
_ADD = (
    _LOG
    + """
local added = {}
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
    added[#added + 1] = ARGV[i]
  end
end
return logged(added, '+')
"""
)
# ARGV[2..]: ids.
_DELETE = (
    _LOG
    + """
local removed = {}
for i = 2, #ARGV do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[i])
    removed[#removed + 1] = ARGV[i]
  end
end
return logged(removed, '-')
"""
)


def _utc(item: MemoryItem) -> MemoryItem:
    """Times kept aware (a naive one is taken as UTC), as the sqlite store does."""
    if item.created_at.tzinfo is not None:
        return item
    return item.model_copy(update={"created_at": item.created_at.replace(tzinfo=UTC)})


def _int(value: Any) -> int:
    return int(value or 0)


def _version(stream_id: bytes | str) -> int:
    return int(_text(stream_id).split("-", 1)[0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class ScopeCache:
    """One scope's items and vectors as of `version` (rows of `matrix` past len(ids) are
    room to grow). An item stays JSON until read: a search reads only its hits."""

    version: int
    epoch: int
    dimensions: int
    ids: list[str] = field(default_factory=list)
    stored: list[MemoryItem | bytes] = field(default_factory=list)
    matrix: Vector = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((0, self.dimensions), np.float32)

    def rows(self) -> Vector:
        return self.matrix[: len(self.ids)]

    def item(self, row: int) -> MemoryItem:
        found = self.stored[row]
        if isinstance(found, bytes):
            found = self.stored[row] = MemoryItem.model_validate_json(found)
        return found

    def items(self) -> list[MemoryItem]:
        return [self.item(row) for row in range(len(self.ids))]

    def append(
        self, ids: Sequence[str], items: Sequence[MemoryItem | bytes], vectors: Sequence[bytes]
    ) -> None:
        count, needed = len(self.ids), len(self.ids) + len(ids)
        if needed > self.matrix.shape[0]:
            grown = np.zeros(
                (max(needed, 2 * self.matrix.shape[0], 64), self.dimensions), np.float32
            )
            grown[:count] = self.rows()
            self.matrix = grown
        block = np.frombuffer(b"".join(vectors), np.float32).reshape(-1, self.dimensions)
        self.matrix[count:needed] = block
        self.ids += ids
        self.stored += items

    def remove(self, ids: set[str]) -> None:
        keep = [i for i, id_ in enumerate(self.ids) if id_ not in ids]
        if len(keep) == len(self.ids):
            return
        self.matrix = self.rows()[keep].copy()
        self.ids = [self.ids[i] for i in keep]
        self.stored = [self.stored[i] for i in keep]


class RedisVectorStore:
    """A LongTermStore in Redis (see the module's docstring). The client must return bytes
    (decode_responses off: vectors are raw bytes)."""

    def __init__(
        self, client: Redis, dimensions: int, *, backups_kept: int = 20, prefix: str = PREFIX
    ) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the redis memory store needs a client with decode_responses off")
        self.client = client
        self.dimensions = dimensions
        self.backups_kept = backups_kept
        self.prefix = prefix
        self._caches: dict[str, ScopeCache] = {}
        # One refresh of a scope's copy at a time (two would both append what they fetch).
        self._refreshing: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._scripts = {lua: client.register_script(lua) for lua in (_ADD, _DELETE)}

    def _key(self, scope: str, part: str) -> str:
        return f"{self.prefix}{{{scope}}}:{part}"

    # --- the in-process copy -------------------------------------------------------------

    async def _fresh(self, scopes: Sequence[str]) -> list[ScopeCache]:
        async with self.client.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.hmget(self._key(scope, "meta"), ["version", "epoch"])
            marks = await pipe.execute()
        caches = []
        for scope, (version, epoch) in zip(scopes, marks, strict=True):
            async with self._refreshing[scope]:
                # Versions and epochs only grow: a copy refreshed meanwhile is not behind.
                cache = self._caches.get(scope)
                if cache is None or cache.epoch < _int(epoch):
                    cache = await self._load(scope)
                elif cache.version < _int(version):
                    cache = await self._catch_up(scope, cache)
            caches.append(cache)
        return caches

    async def _load(self, scope: str) -> ScopeCache:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(self._key(scope, "meta"), ["version", "epoch"])
            pipe.hgetall(self._key(scope, "items"))
            pipe.hgetall(self._key(scope, "vectors"))
            (version, epoch), items, vectors = await pipe.execute()
        cache = ScopeCache(_int(version), _int(epoch), self.dimensions)
        ids = [id_ for id_ in items if id_ in vectors]
        cache.append([_text(i) for i in ids], [items[i] for i in ids], [vectors[i] for i in ids])
        self._caches[scope] = cache
        return cache

    async def _catch_up(self, scope: str, cache: ScopeCache) -> ScopeCache:
        """Another process wrote: replay the scope's change log since our version (the ids
        added and deleted), fetching only what was added."""
        since = f"{cache.version + 1}-0"
        log = cast(LogEntries, await self.client.xrange(self._key(scope, "log"), since, "+"))
        if not log or _version(log[0][0]) != cache.version + 1:
            return await self._load(scope)  # the log was trimmed past us
        last: dict[str, bytes] = {}  # id -> its last change, + or -
        for _, changes in log:
            last.update({_text(id_): change for id_, change in changes.items()})
        cache.remove(set(last))
        added = [id_ for id_, change in last.items() if change == b"+"]
        if added:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hmget(self._key(scope, "items"), added)
                pipe.hmget(self._key(scope, "vectors"), added)
                items, vectors = await pipe.execute()
            # Gone since (None) is in a later change: the next search replays it.
            found = [(a, i, v) for a, i, v in zip(added, items, vectors, strict=True) if i and v]
            cache.append(
                [a for a, _, _ in found], [i for _, i, _ in found], [v for _, _, v in found]
            )
        cache.version = _version(log[-1][0])
        return cache

    async def _script(self, lua: str, scope: str, args: list[Any]) -> list[Any]:
        keys = [self._key(scope, part) for part in ("items", "vectors", "meta", "log")]
        reply = await self._scripts[lua](keys=keys, args=[LOG_LENGTH, *args])
        return list(reply)

    def _wrote(self, scope: str, version: int, epoch: int) -> ScopeCache | None:
        """The copy to apply this process's write to: only if no other write came between
        (its version is the one just before ours)."""
        cache = self._caches.get(scope)
        if cache is None or cache.epoch != epoch or cache.version != version - 1:
            return None
        if self._refreshing[scope].locked():
            return None  # a refresh in flight may be fetching this write too: it, or the next, will
        cache.version = version
        return cache

    # --- the store -----------------------------------------------------------------------

    async def add(self, items: Sequence[MemoryItem], vectors: Vector) -> int:
        matrix = as_matrix(vectors, len(items), self.dimensions)
        by_scope: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_scope.setdefault(item.scope, []).append(i)
        added = 0
        for scope, rows in by_scope.items():
            # Listed first: scopes() never misses a scope that holds items.
            await self.client.sadd(f"{self.prefix}scopes", scope)
            for first in range(0, len(rows), SCRIPT_BATCH):
                batch = rows[first : first + SCRIPT_BATCH]
                stored: dict[str, tuple[MemoryItem, bytes]] = {}
                for i in batch:  # an id twice in one call: the first stays, as in the sqlite store
                    stored.setdefault(items[i].id, (_utc(items[i]), matrix[i].tobytes()))
                args = [
                    a
                    for id_, (item, vector) in stored.items()
                    for a in (id_, item.model_dump_json(), vector)
                ]
                version, epoch, *new = await self._script(_ADD, scope, args)
                added += len(new)
                cache = self._wrote(scope, version, epoch)
                if cache is not None:
                    fresh = [stored[_text(id_)] for id_ in new]
                    cache.append(
                        [i.id for i, _ in fresh], [i for i, _ in fresh], [v for _, v in fresh]
                    )
        return added

    async def search(
        self, scopes: Sequence[str], vector: Vector, limit: int, *, min_score: float = -1.0
    ) -> list[MemoryHit]:
        query = as_query(vector, self.dimensions)
        if limit <= 0 or not scopes:
            return []
        hits: list[MemoryHit] = []
        for cache in await self._fresh(list(dict.fromkeys(scopes))):
            count = len(cache.ids)
            if count == 0:
                continue
            # Not `rows @ query`: OpenBLAS spreads a product over threads, and on a busy
            # two-core machine that made a 10,000-row search 8 ms instead of 0.6.
            scores = np.einsum("ij,j->i", cache.rows(), query)
            top = np.argpartition(-scores, limit - 1)[:limit] if limit < count else range(count)
            hits += [
                MemoryHit(item=cache.item(i), score=float(scores[i]))
                for i in top
                if scores[i] >= min_score
            ]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:limit]

    async def items(self, scope: str) -> list[MemoryItem]:
        (cache,) = await self._fresh([scope])
        return sorted(cache.items(), key=lambda item: (item.created_at, item.id))

    async def scopes(self) -> list[str]:
        known = sorted(_text(s) for s in await self.client.smembers(f"{self.prefix}scopes"))
        async with self.client.pipeline(transaction=False) as pipe:
            for scope in known:
                pipe.hlen(self._key(scope, "items"))
            sizes = await pipe.execute()
        return [scope for scope, size in zip(known, sizes, strict=True) if size]

    async def stats(self, scope: str) -> ScopeStats:
        items = await self.items(scope)
        by_kind: dict[str, int] = {}
        for item in items:
            by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
        return ScopeStats(
            scope=scope,
            items=len(items),
            by_kind=by_kind,
            authors=len({item.author for item in items if item.author is not None}),
            oldest=items[0].created_at if items else None,
            newest=items[-1].created_at if items else None,
        )

    async def delete(self, scope: str, ids: Sequence[str]) -> int:
        gone = 0
        for first in range(0, len(ids), SCRIPT_BATCH):
            version, epoch, *removed = await self._script(
                _DELETE, scope, list(ids[first : first + SCRIPT_BATCH])
            )
            gone += len(removed)
            cache = self._wrote(scope, version, epoch)
            if cache is not None:
                cache.remove({_text(id_) for id_ in removed})
        return gone

    async def delete_author(self, author: str) -> int:
        gone = 0
        for scope in (_text(s) for s in await self.client.smembers(f"{self.prefix}scopes")):
            stored = await self.client.hgetall(self._key(scope, "items"))
            theirs = [
                _text(id_)
                for id_, data in stored.items()
                if MemoryItem.model_validate_json(data).author == author
            ]
            gone += await self.delete(scope, theirs)
            for backup_id in await self.client.lrange(self._key(scope, "backups"), 0, -1):
                await self._drop_from_backup(scope, _text(backup_id), author)
        return gone

    async def _drop_from_backup(self, scope: str, backup_id: str, author: str) -> None:
        key = self._key(scope, f"backup:{backup_id}")
        info, data = await self.client.hmget(key, ["info", "items"])
        if info is None or data is None:
            return
        held = decode_backup(data)
        kept = [(item, vector) for item, vector in held if item.author != author]
        if len(kept) != len(held):
            updated = LongTermBackupInfo.model_validate_json(info).model_copy(
                update={"items": len(kept)}
            )
            await self.client.hset(
                key, mapping={"info": updated.model_dump_json(), "items": encode_backup(kept)}
            )

    async def _contents(self, scope: str) -> list[tuple[MemoryItem, bytes]]:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key(scope, "items"))
            pipe.hgetall(self._key(scope, "vectors"))
            items, vectors = await pipe.execute()
        return self._pairs(items, vectors)

    @staticmethod
    def _pairs(items: dict[Any, Any], vectors: dict[Any, Any]) -> list[tuple[MemoryItem, bytes]]:
        pairs = [
            (MemoryItem.model_validate_json(data), vectors[id_])
            for id_, data in items.items()
            if id_ in vectors
        ]
        return sorted(pairs, key=lambda pair: (pair[0].created_at, pair[0].id))

    def _queue_backup(self, pipe: Any, info: LongTermBackupInfo, data: str) -> None:
        pipe.hset(
            self._key(info.scope, f"backup:{info.id}"),
            mapping={"info": info.model_dump_json(), "items": data},
        )
        pipe.lpush(self._key(info.scope, "backups"), info.id)

    async def _prune_backups(self, scope: str) -> None:
        """Keep the newest backups_kept of the scope."""
        old = await self.client.lrange(self._key(scope, "backups"), self.backups_kept, -1)
        if old:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(*(self._key(scope, f"backup:{_text(b)}") for b in old))
                pipe.ltrim(self._key(scope, "backups"), 0, self.backups_kept - 1)
                await pipe.execute()

    async def backup(self, scope: str, reason: str) -> LongTermBackupInfo:
        contents = await self._contents(scope)
        info = new_backup_info(scope, reason, len(contents))
        async with self.client.pipeline(transaction=True) as pipe:
            self._queue_backup(pipe, info, encode_backup(contents))
            await pipe.execute()
        await self._prune_backups(scope)
        return info

    async def backups(self, scope: str) -> list[LongTermBackupInfo]:
        ids = await self.client.lrange(self._key(scope, "backups"), 0, -1)
        async with self.client.pipeline(transaction=False) as pipe:
            for backup_id in ids:
                pipe.hget(self._key(scope, f"backup:{_text(backup_id)}"), "info")
            infos = await pipe.execute()
        return [LongTermBackupInfo.model_validate_json(info) for info in infos if info]

    async def reset(self, scope: str) -> LongTermBackupInfo:
        meta = self._key(scope, "meta")
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    # Every write moves the version: watching it, the backup holds exactly
                    # what is emptied (a write in between makes this try again).
                    await pipe.watch(meta)
                    items = await pipe.hgetall(self._key(scope, "items"))
                    vectors = await pipe.hgetall(self._key(scope, "vectors"))
                    contents = self._pairs(items, vectors)
                    info = new_backup_info(scope, "reset", len(contents))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    self._queue_backup(pipe, info, encode_backup(contents))
                    self._queue_replace(pipe, scope, [])
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        await self._prune_backups(scope)
        return info

    def _queue_replace(
        self, pipe: Any, scope: str, contents: list[tuple[MemoryItem, bytes]]
    ) -> None:
        # The log goes too: a copy made before this reloads whole (the epoch moves).
        pipe.delete(*(self._key(scope, part) for part in ("items", "vectors", "log")))
        if contents:
            pipe.hset(
                self._key(scope, "items"),
                mapping={i.id: _utc(i).model_dump_json() for i, _ in contents},
            )
            pipe.hset(self._key(scope, "vectors"), mapping={i.id: v for i, v in contents})
        pipe.hincrby(self._key(scope, "meta"), "version", 1)
        pipe.hincrby(self._key(scope, "meta"), "epoch", 1)

    async def restore(self, scope: str, backup_id: str) -> int:
        data = await self.client.hget(self._key(scope, f"backup:{backup_id}"), "items")
        if data is None:
            raise KeyError(f"no backup {backup_id!r} of scope {scope!r}")
        contents = decode_backup(data)
        await self.client.sadd(f"{self.prefix}scopes", scope)
        async with self.client.pipeline(transaction=True) as pipe:
            self._queue_replace(pipe, scope, contents)
            await pipe.execute()
        return len({item.id for item, _ in contents})

    async def save_snapshot(self, session_id: str, data: bytes) -> None:
        await self.client.set(f"{self.prefix}snapshot:{session_id}", data)
        await self.client.sadd(f"{self.prefix}snapshots", session_id)

    async def load_snapshot(self, session_id: str) -> bytes | None:
        data = await self.client.get(f"{self.prefix}snapshot:{session_id}")
        return data.encode() if isinstance(data, str) else data

    async def snapshot_sessions(self) -> list[str]:
        return sorted(_text(s) for s in await self.client.smembers(f"{self.prefix}snapshots"))

    async def close(self) -> None:
        """The client is the caller's (the bus's): only the in-process copies go."""
        self._caches.clear()
