"""Long-term memory search latency: the sqlite-vec store and the Redis store, against plain
numpy over the same vectors in memory (the floor: what brute force costs with no store).

    python -m benchmarks.memory_store [--dimensions 384] [--searches 200] [--limit 9]

Cases: one scope of 1,000 and of 10,000 items, and 100 scopes of 1,000 (100,000 items,
each search in one of them). Each search is one `await store.search([scope], query,
limit)` on random unit vectors (seeded; no embedder: its cost is not the store's). The
Redis store is measured warm (its in-process copy is current: the steady state of a
policy that writes and searches its scopes); at 10,000 also right after another client
added an item (the copy catches up from the log) and on a process's first search (the
copy is loaded). numpy is the floor twice: `@` (OpenBLAS, which uses threads) and einsum
(one thread, as the Redis store does). Figures are per search, in ms; "other load" is how
many cores the rest of the machine kept busy meanwhile (a shared machine skews them).

Without REDIS_URL it starts an embedded Redis; with one, it writes under a key prefix of
its own and deletes those keys afterwards.
"""

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from benchmarks.cpu_share import OtherLoad
from services.bus.redis_server import EmbeddedRedis
from services.memory.items import MemoryItem
from services.memory.redis_store import RedisVectorStore
from services.memory.sqlite_store import SqliteVecStore
from services.memory.store import LongTermStore, Vector

CASES = (("1 scope x 1k", 1, 1_000), ("1 scope x 10k", 1, 10_000), ("100 scopes x 1k", 100, 1_000))
START = datetime(2026, 1, 1, tzinfo=UTC)
console = Console()


@dataclass
class Row:
    store: str
    case: str
    p50_ms: float
    p95_ms: float
    other_cores: float | None


def unit_vectors(rng: np.random.Generator, count: int, dimensions: int) -> Vector:
    vectors = rng.standard_normal((count, dimensions), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def items_of(scope: str, first: int, count: int) -> list[MemoryItem]:
    return [
        MemoryItem(
            id=f"{scope}-{n}",
            scope=scope,
            kind="fact",
            text=f"memory number {n}",
            author=f"viewer{n % 50}",
            created_at=START + timedelta(seconds=n),
        )
        for n in range(first, first + count)
    ]


async def fill(store: LongTermStore, scopes: list[str], vectors: list[Vector]) -> None:
    for scope, matrix in zip(scopes, vectors, strict=True):
        for first in range(0, len(matrix), 1_000):
            batch = matrix[first : first + 1_000]
            await store.add(items_of(scope, first, len(batch)), batch)


async def timed(
    searches: int, search: Callable[[int], Awaitable[object]]
) -> tuple[list[float], float | None]:
    load = OtherLoad()
    load.start()
    took = []
    for n in range(searches):
        began = time.perf_counter()
        await search(n)
        took.append((time.perf_counter() - began) * 1000)
    return took, load.cores()


def row(store: str, case: str, took: list[float], cores: float | None) -> Row:
    p50, p95 = np.percentile(took, [50, 95])
    return Row(store, case, float(p50), float(p95), cores)


@dataclass
class Bench:
    args: argparse.Namespace
    folder: Path
    client: Redis  # the Redis store's
    other: Redis  # another process's client, writing
    prefix: str  # of every key written
    rng: np.random.Generator


async def measure_case(bench: Bench, case: str, scope_count: int, per_scope: int) -> list[Row]:
    args, rows = bench.args, []
    scopes = [f"bench:s{n}" for n in range(scope_count)]
    vectors = [unit_vectors(bench.rng, per_scope, args.dimensions) for _ in scopes]
    queries = unit_vectors(bench.rng, args.searches, args.dimensions)

    async def blas_search(n: int) -> object:
        scores = vectors[n % scope_count] @ queries[n]  # OpenBLAS: threads
        return np.argpartition(-scores, args.limit)[: args.limit]

    async def einsum_search(n: int) -> object:
        scores = np.einsum("ij,j->i", vectors[n % scope_count], queries[n])  # one thread
        return np.argpartition(-scores, args.limit)[: args.limit]

    rows.append(row("numpy @", case, *await timed(args.searches, blas_search)))
    rows.append(row("numpy einsum", case, *await timed(args.searches, einsum_search)))
    redis_store = RedisVectorStore(bench.client, args.dimensions, prefix=f"{bench.prefix}{case}:")
    sqlite_path = bench.folder / f"{scope_count}x{per_scope}.sqlite3"
    stores: dict[str, LongTermStore] = {
        "sqlite-vec": SqliteVecStore(sqlite_path, args.dimensions),
        "redis": redis_store,
    }
    for name, store in stores.items():
        began = time.perf_counter()
        await fill(store, scopes, vectors)
        console.print(f"{name}, {case}: filled in {time.perf_counter() - began:.1f} s")
        for scope in scopes:  # warm: each process keeps searching its scopes
            await store.search([scope], queries[0], args.limit)

        async def search(n: int, store: LongTermStore = store) -> object:
            return await store.search([scopes[n % scope_count]], queries[n], args.limit)

        rows.append(row(name, case, *await timed(args.searches, search)))

    if per_scope == 10_000:
        writer = RedisVectorStore(bench.other, args.dimensions, prefix=f"{bench.prefix}{case}:")
        extra = unit_vectors(bench.rng, args.searches, args.dimensions)
        load, took = OtherLoad(), []
        load.start()
        for n in range(args.searches):
            # Not timed: another client's write. Timed: the search that follows.
            await writer.add(items_of(scopes[0], per_scope + n, 1), extra[n : n + 1])
            began = time.perf_counter()
            await redis_store.search([scopes[0]], queries[n], args.limit)
            took.append((time.perf_counter() - began) * 1000)
        rows.append(row("redis", f"{case}, after another's write", took, load.cores()))
        load, took = OtherLoad(), []
        load.start()
        for n in range(5):  # a process's first search of the scope: loads the whole copy
            cold = RedisVectorStore(bench.other, args.dimensions, prefix=f"{bench.prefix}{case}:")
            began = time.perf_counter()
            await cold.search([scopes[0]], queries[n], args.limit)
            took.append((time.perf_counter() - began) * 1000)
        rows.append(row("redis", f"{case}, first search (5)", took, load.cores()))
    for store in stores.values():
        await store.close()
    return rows


async def measure(args: argparse.Namespace, redis_url: str, folder: Path) -> list[Row]:
    client, other = Redis.from_url(redis_url), Redis.from_url(redis_url)
    bench = Bench(
        args,
        folder,
        client,
        other,
        f"bench:memory:{uuid.uuid4().hex[:8]}:",
        np.random.default_rng(7),
    )
    rows: list[Row] = []
    try:
        for case, scope_count, per_scope in CASES:
            rows += await measure_case(bench, case, scope_count, per_scope)
    finally:
        async for key in client.scan_iter(match=f"{bench.prefix}*", count=1_000):
            await client.delete(key)
        await client.aclose()
        await other.aclose()
    return rows


def report(rows: list[Row], args: argparse.Namespace) -> None:
    table = Table(
        title=f"search latency, {args.dimensions} dimensions, top {args.limit}, "
        f"{args.searches} searches per row (ms)"
    )
    for column in ("store", "case", "p50", "p95", "other load (cores)"):
        table.add_column(column, justify="left" if column in ("store", "case") else "right")
    for r in rows:
        cores = "-" if r.other_cores is None else f"{r.other_cores:.2f}"
        table.add_row(r.store, r.case, f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}", cores)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--limit", type=int, default=9, help="hits per search (recall asks 3x3)")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = os.environ.get("REDIS_URL") or stack.enter_context(EmbeddedRedis()).url
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        report(asyncio.run(measure(args, url, folder)), args)


if __name__ == "__main__":
    main()
