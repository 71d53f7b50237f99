"""One contract for both long-term stores: the sqlite-vec file and Redis (the suite's real
server). Vectors are small random unit vectors (seeded): no model is needed."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from services.errors import ConfigError
from services.memory.items import MemoryHit, MemoryItem
from services.memory.redis_store import RedisVectorStore
from services.memory.sqlite_store import SqliteVecStore
from services.memory.store import LongTermStore, Vector

pytestmark = pytest.mark.integration

DIMENSIONS = 16
A, B = "character:ada", "session:s-b"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OpenStore = Callable[[], Awaitable[LongTermStore]]


@pytest.fixture(params=["sqlite", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens store objects on one backing store: the same file, or the same Redis through
    a client of each's own (as separate processes would)."""
    opened: list[LongTermStore] = []
    clients: list[Redis] = []

    async def open_one() -> LongTermStore:
        store: LongTermStore
        if request.param == "sqlite":
            store = SqliteVecStore(
                tmp_path / "memory" / "store.sqlite3", DIMENSIONS, backups_kept=3
            )
        else:
            client = Redis.from_url(request.getfixturevalue("redis_url"))
            clients.append(client)
            store = RedisVectorStore(client, DIMENSIONS, backups_kept=3)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()
    for client in clients:
        await client.aclose()


@pytest.fixture
async def store(open_store: OpenStore) -> LongTermStore:
    return await open_store()


def unit_vectors(count: int, seed: int) -> Vector:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSIONS), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def make_items(
    scope: str, count: int, *, first: int = 0, author: str | None = None
) -> list[MemoryItem]:
    return [
        MemoryItem(
            id=MemoryItem.make_id(scope, "fact", f"fact {n}"),
            scope=scope,
            kind="fact",
            text=f"fact {n}",
            author=author,
            session_id="s1",
            turn_id=f"t{n}",
            created_at=START + timedelta(seconds=n),
        )
        for n in range(first, first + count)
    ]


def ranked(hits: Sequence[MemoryHit]) -> list[tuple[str, float]]:
    return [(hit.item.id, round(hit.score, 4)) for hit in hits]


async def test_add_is_idempotent_and_items_come_oldest_first(store: LongTermStore) -> None:
    items, vectors = make_items(A, 6), unit_vectors(6, seed=1)
    order = [3, 0, 5, 1, 4, 2]  # stored out of time order
    assert await store.add([items[i] for i in order], vectors[order]) == 6
    assert await store.add(items[:2], vectors[:2]) == 0
    also_new = make_items(A, 1, first=6)
    assert await store.add([items[0], *also_new], unit_vectors(2, seed=2)) == 1
    assert await store.items(A) == [*items, *also_new]
    assert await store.items(B) == []


async def test_search_ranks_by_cosine_and_honours_limit_and_min_score(
    store: LongTermStore,
) -> None:
    items, vectors = make_items(A, 40), unit_vectors(40, seed=3)
    await store.add(items, vectors)
    query = unit_vectors(1, seed=4)[0]
    scores = vectors @ query
    best = np.argsort(-scores)

    hits = await store.search([A], query, 5)
    assert [hit.item for hit in hits] == [items[i] for i in best[:5]]
    assert [hit.score for hit in hits] == pytest.approx([scores[i] for i in best[:5]], abs=1e-5)

    floor = float(scores[best[2]]) - 1e-4  # the third best just passes
    assert [hit.item for hit in await store.search([A], query, 10, min_score=floor)] == [
        items[i] for i in best[:3]
    ]
    assert (await store.search([A], vectors[7], 1))[0].item == items[7]
    assert (await store.search([A], vectors[7], 1))[0].score == pytest.approx(1.0, abs=1e-5)
    assert await store.search([A], query, 0) == []
    assert await store.search([B], query, 5) == []


async def test_scopes_are_kept_apart(store: LongTermStore) -> None:
    in_a, in_b = make_items(A, 10), make_items(B, 10)
    vectors_a, vectors_b = unit_vectors(10, seed=5), unit_vectors(10, seed=6)
    await store.add(in_a, vectors_a)
    await store.add(in_b, vectors_b)
    assert await store.scopes() == [A, B]

    for i in range(10):  # B's own vectors, searched in A: never B's items
        assert all(hit.item.scope == A for hit in await store.search([A], vectors_b[i], 10))
    query = unit_vectors(1, seed=7)[0]
    both = await store.search([A, B], query, 20)
    assert {hit.item.id for hit in both} == {item.id for item in in_a + in_b}
    assert [hit.score for hit in both] == sorted((hit.score for hit in both), reverse=True)
    top = await store.search([B, A], query, 4)
    assert ranked(top) == ranked(both[:4])


async def test_stats(store: LongTermStore) -> None:
    items = [
        *make_items(A, 3, author="bob"),
        *make_items(A, 2, first=3, author="cy"),
        *make_items(A, 1, first=5),
    ]
    note = MemoryItem(
        id="note-1", scope=A, kind="note", text="likes tea", created_at=START + timedelta(hours=1)
    )
    await store.add([*items, note], unit_vectors(7, seed=8))
    stats = await store.stats(A)
    assert (stats.items, stats.by_kind, stats.authors) == (7, {"fact": 6, "note": 1}, 2)
    assert (stats.oldest, stats.newest) == (START, note.created_at)
    empty = await store.stats(B)
    assert (empty.items, empty.by_kind, empty.oldest, empty.newest) == (0, {}, None, None)


async def test_delete(store: LongTermStore) -> None:
    items, vectors = make_items(A, 5), unit_vectors(5, seed=9)
    await store.add(items, vectors)
    assert await store.delete(A, [items[1].id, items[3].id, "no-such-id"]) == 2
    assert await store.delete(B, [items[0].id]) == 0  # not B's
    assert await store.items(A) == [items[0], items[2], items[4]]
    hits = await store.search([A], vectors[1], 5)
    assert {hit.item.id for hit in hits} == {items[0].id, items[2].id, items[4].id}


async def test_delete_author_reaches_every_scope_and_backup(store: LongTermStore) -> None:
    bob_a, cy_a = make_items(A, 3, author="bob"), make_items(A, 2, first=3, author="cy")
    bob_b, others_b = make_items(B, 2, author="bob"), make_items(B, 2, first=2)
    await store.add([*bob_a, *cy_a], unit_vectors(5, seed=10))
    await store.add([*bob_b, *others_b], unit_vectors(4, seed=11))
    backup = await store.backup(A, "before the request")
    assert backup.items == 5

    assert await store.delete_author("bob") == 5
    assert await store.items(A) == cy_a
    assert await store.items(B) == others_b
    assert [b.items for b in await store.backups(A)] == [2]
    assert await store.restore(A, backup.id) == 2  # what comes back holds nothing of bob's
    assert await store.items(A) == cy_a
    assert await store.delete_author("bob") == 0


async def test_backup_reset_restore_round_trip(store: LongTermStore) -> None:
    items, vectors = make_items(A, 12), unit_vectors(12, seed=12)
    await store.add(items, vectors)
    await store.add(make_items(B, 2), unit_vectors(2, seed=13))
    queries = unit_vectors(5, seed=14)
    before = [ranked(await store.search([A], q, 4)) for q in queries]

    reset = await store.reset(A)
    assert (reset.scope, reset.items, reset.reason) == (A, 12, "reset")
    assert await store.items(A) == []
    assert await store.search([A], queries[0], 4) == []
    assert len(await store.items(B)) == 2  # another scope is untouched
    assert await store.scopes() == [B]

    await store.add(make_items(A, 1, first=50), unit_vectors(1, seed=15))
    assert await store.restore(A, reset.id) == 12  # replaces what came since
    assert await store.items(A) == items
    assert [ranked(await store.search([A], q, 4)) for q in queries] == before
    with pytest.raises(KeyError):
        await store.restore(A, "no-such-backup")
    with pytest.raises(KeyError):
        await store.restore(B, reset.id)  # A's backup is not B's


async def test_backups_newest_first_and_only_the_newest_kept(store: LongTermStore) -> None:
    await store.add(make_items(A, 2), unit_vectors(2, seed=16))
    made = [await store.backup(A, f"manual {n}") for n in range(5)]
    kept = await store.backups(A)
    assert [b.id for b in kept] == [b.id for b in reversed(made)][:3]  # backups_kept=3
    assert [b.reason for b in kept] == ["manual 4", "manual 3", "manual 2"]
    with pytest.raises(KeyError):
        await store.restore(A, made[0].id)
    assert await store.backups(B) == []


async def test_snapshots(store: LongTermStore) -> None:
    assert await store.load_snapshot("s1") is None
    await store.save_snapshot("s1", b"\x00first")
    await store.save_snapshot("s2", b"other")
    await store.save_snapshot("s1", b"\x00latest")
    assert await store.load_snapshot("s1") == b"\x00latest"
    assert await store.snapshot_sessions() == ["s1", "s2"]


async def test_another_store_object_sees_every_write(open_store: OpenStore) -> None:
    """Two processes' view of one store: what one writes, the other's next call sees (the
    redis store's in-process copy included)."""
    writer, reader = await open_store(), await open_store()
    items, vectors = make_items(A, 8), unit_vectors(8, seed=17)
    await writer.add(items[:4], vectors[:4])
    assert len(await reader.search([A], vectors[0], 10)) == 4  # the reader's copy is made

    await writer.add(items[4:], vectors[4:])
    assert {h.item.id for h in await reader.search([A], vectors[6], 10)} == {i.id for i in items}
    await writer.delete(A, [items[6].id])
    assert items[6].id not in {h.item.id for h in await reader.search([A], vectors[6], 10)}
    backup = await writer.reset(A)
    assert await reader.search([A], vectors[0], 10) == []
    await writer.restore(A, backup.id)
    assert len(await reader.search([A], vectors[0], 10)) == 7
    # Both write in turn: the reader's own write must not hide the writer's from it.
    await writer.add(make_items(A, 1, first=20), unit_vectors(1, seed=18))
    await reader.add(make_items(A, 1, first=21), unit_vectors(1, seed=19))
    assert len(await reader.search([A], vectors[0], 10)) == len(await writer.items(A)) == 9
    # Searches and a write of the reader's at once, just after the writer's: each item once.
    # (Searched at once first, so that the reader has a connection for each.)
    await asyncio.gather(*(reader.search([A], vectors[0], 20) for _ in range(8)))
    await writer.add(make_items(A, 1, first=22), unit_vectors(1, seed=20))
    await asyncio.gather(
        *(reader.search([A], vectors[0], 20) for _ in range(4)),
        reader.add(make_items(A, 1, first=23), unit_vectors(1, seed=21)),
        *(reader.search([A], vectors[0], 20) for _ in range(4)),
    )
    assert sorted(i.id for i in await reader.items(A)) == sorted(
        i.id for i in await writer.items(A)
    )
    assert len(await reader.items(A)) == 11


async def test_concurrent_writers_do_not_fail(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    items, vectors = make_items(A, 40), unit_vectors(40, seed=19)
    added = await asyncio.gather(
        *(
            (first if n % 2 else second).add(items[n : n + 4], vectors[n : n + 4])
            for n in range(0, 40, 4)
        )
    )
    assert sum(added) == 40
    assert len(await first.items(A)) == len(await second.items(A)) == 40


async def test_sqlite_store_errors_name_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="MARIONETTE_MEMORY_PATH"):
        SqliteVecStore(blocker / "memory.sqlite3", DIMENSIONS)  # its folder is a file
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("shopping list " * 500)
    with pytest.raises(ConfigError, match="MARIONETTE_MEMORY_PATH"):
        SqliteVecStore(not_a_database, DIMENSIONS)
    store = SqliteVecStore(tmp_path / "memory.sqlite3", DIMENSIONS)
    await store.close()
    with pytest.raises(ConfigError, match="16 dimensions"):
        SqliteVecStore(tmp_path / "memory.sqlite3", DIMENSIONS * 2)


async def test_redis_keys_share_a_slot_per_scope(redis_client: Redis) -> None:
    store = RedisVectorStore(redis_client, DIMENSIONS)
    await store.add(make_items(A, 2), unit_vectors(2, seed=20))
    await store.backup(A, "check")
    found = await redis_client.keys("marionette:memory:lt:{*")
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in found)
    assert [k.split("}:", 1)[1].split(":")[0] for k in keys] == [
        "backup",
        "backups",
        "items",
        "log",
        "meta",
        "vectors",
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 1  # Redis Cluster: one slot
    with pytest.raises(ValueError, match="decode_responses"):
        RedisVectorStore(Redis(decode_responses=True), DIMENSIONS)


async def test_redis_copy_reloads_when_the_log_no_longer_reaches_it(redis_url: str) -> None:
    async with Redis.from_url(redis_url) as one, Redis.from_url(redis_url) as two:
        writer, reader = RedisVectorStore(one, DIMENSIONS), RedisVectorStore(two, DIMENSIONS)
        items, vectors = make_items(A, 6), unit_vectors(6, seed=21)
        await writer.add(items[:3], vectors[:3])
        assert len(await reader.search([A], vectors[0], 10)) == 3
        await writer.add(items[3:], vectors[3:])
        await writer.delete(A, [items[0].id])
        await one.delete(f"marionette:memory:lt:{{{A}}}:log")  # as if trimmed past the reader
        assert {h.item.id for h in await reader.search([A], vectors[0], 10)} == {
            item.id for item in items[1:]
        }
