"""The embedded long-term store: one SQLite file per machine, vectors searched by sqlite-vec.

Every process of the machine opens the same file (policy writes and searches while the
gateway and the CLI read, export, import, forget and reset), so the file runs in WAL mode
(readers never block the writer) with a busy timeout, and every write is one
`BEGIN IMMEDIATE` transaction (a writer waits for the lock up front instead of failing
half way).

Tables: `memory_items` (one row per item; its integer `vector_id` is also the row of its
vector), `memory_vectors` (a sqlite-vec `vec0` table partitioned by scope: a KNN query with
`scope = ?` reads only that scope's vectors), `memory_backups` (a scope's items and vectors
as JSON, vectors base64 float32) and `memory_snapshots` (short-term memory per session).

The SQLite driver: pysqlite3 (pysqlite3-binary: its own SQLite, extension loading built in)
where installed, else the standard library's, which can load extensions only when Python
was built so (Debian's and the python Docker images are; pyenv's and macOS's are not).
"""

import asyncio
import base64
import importlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, cast

import numpy as np

from services.errors import ConfigError, StageStartError
from services.memory.items import LongTermBackupInfo, MemoryHit, MemoryItem, ScopeStats
from services.memory.store import Vector

T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KNN_MAX = 4096  # sqlite-vec refuses a larger k
BATCH = 500  # ids per statement: well under SQLite's bound-parameter limit
# Each scope (a vec0 partition) preallocates whole chunks of vectors: at 384 dimensions a
# chunk of 128 is 196 KB, where the default 1024 would cost every small session scope
# 1.5 MB on disk. Searching 10,000 vectors costs about the same either way (measured).
CHUNK_SIZE = 128
ITEM_FIELDS = ("id", "scope", "kind", "text", "author", "session_id", "turn_id", "created_at")
# Qualified: memory_vectors has a scope column too.
ITEM_COLUMNS = ", ".join(f"memory_items.{field}" for field in ITEM_FIELDS)


class SqliteVecUnavailable(StageStartError):
    """This Python's SQLite cannot load extensions, or sqlite-vec is not installed."""


def _driver() -> ModuleType:
    try:
        return importlib.import_module("pysqlite3.dbapi2")
    except ImportError:
        return sqlite3


def _extension_path() -> str:
    try:
        return str(resources.files("sqlite_vec") / "vec0")
    except ModuleNotFoundError:
        raise SqliteVecUnavailable(
            "the sqlite memory store needs sqlite-vec: pip install sqlite-vec==0.1.9 "
            "(or set MARIONETTE_MEMORY_STORE=redis)"
        ) from None


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch (a naive time is taken as UTC): exact, and ordered."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (aware - EPOCH) // timedelta(microseconds=1)


def _moment(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def _item_row(item: MemoryItem) -> tuple[Any, ...]:
    return (
        item.id,
        item.scope,
        item.kind,
        item.text,
        item.author,
        item.session_id,
        item.turn_id,
        _micros(item.created_at),
    )


def _item(row: Sequence[Any]) -> MemoryItem:
    id_, scope, kind, text, author, session_id, turn_id, created = row
    return MemoryItem(
        id=id_,
        scope=scope,
        kind=kind,
        text=text,
        author=author,
        session_id=session_id,
        turn_id=turn_id,
        created_at=_moment(created),
    )


def encode_backup(items: Sequence[tuple[MemoryItem, bytes]]) -> str:
    """A backup's items as JSON: each item's fields and its vector (base64 float32)."""
    return json.dumps(
        [
            {"item": item.model_dump(mode="json"), "vector": base64.b64encode(vector).decode()}
            for item, vector in items
        ]
    )


def decode_backup(data: str | bytes) -> list[tuple[MemoryItem, bytes]]:
    return [
        (MemoryItem.model_validate(entry["item"]), base64.b64decode(entry["vector"]))
        for entry in json.loads(data)
    ]


def new_backup_info(scope: str, reason: str, count: int) -> LongTermBackupInfo:
    made_at = datetime.now(UTC)
    backup_id = f"{made_at:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
    return LongTermBackupInfo(
        id=backup_id, scope=scope, made_at=made_at, items=count, reason=reason
    )


def as_matrix(vectors: Vector, rows: int, dimensions: int) -> Vector:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.shape != (rows, dimensions):
        raise ValueError(f"expected {rows} vectors of {dimensions}, got shape {matrix.shape}")
    return matrix


def as_query(vector: Vector, dimensions: int) -> Vector:
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
    if query.shape != (dimensions,):
        raise ValueError(f"expected a vector of {dimensions}, got shape {query.shape}")
    return query


class SqliteVecStore:
    """A LongTermStore in one SQLite file (see the module's docstring)."""

    def __init__(self, path: Path, dimensions: int, *, backups_kept: int = 20) -> None:
        self.path = Path(path)
        self.dimensions = dimensions
        self.backups_kept = backups_kept
        self._lock = threading.Lock()  # one connection, used by one worker thread at a time
        self._db = self._open()

    # --- opening -----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        driver = _driver()
        extension = _extension_path()
        fix = "set MARIONETTE_MEMORY_PATH to a file this user can create and write"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"MARIONETTE_MEMORY_PATH={self.path}: cannot create its folder ({e}); {fix}"
            ) from e
        connect = cast(Callable[..., sqlite3.Connection], driver.connect)
        try:
            # Autocommit (isolation_level=None): transactions are begun explicitly below.
            db = connect(
                str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except driver.Error as e:
            raise ConfigError(
                f"MARIONETTE_MEMORY_PATH={self.path}: cannot open ({e}); {fix}"
            ) from e
        if not hasattr(db, "enable_load_extension"):
            db.close()
            raise SqliteVecUnavailable(
                "this Python's sqlite3 cannot load extensions (it was built without "
                "--enable-loadable-sqlite-extensions), so sqlite-vec cannot run: "
                "pip install pysqlite3-binary (Linux), use a Python built with it, or set "
                "MARIONETTE_MEMORY_STORE=redis"
            )
        try:
            db.enable_load_extension(True)
            db.load_extension(extension)
            db.enable_load_extension(False)
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable but for a power cut
            self._create_tables(db)
        except driver.Error as e:
            db.close()
            raise ConfigError(
                f"MARIONETTE_MEMORY_PATH={self.path}: not a usable memory store ({e}); "
                f"point it at a new file, or move this one away"
            ) from e
        return db

    def _create_tables(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in self._schema():
                db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO memory_meta VALUES ('dimensions', ?)",
                (str(self.dimensions),),
            )
            (stored,) = db.execute(
                "SELECT value FROM memory_meta WHERE key = 'dimensions'"
            ).fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if int(stored) != self.dimensions:
            db.close()
            raise ConfigError(
                f"MARIONETTE_MEMORY_PATH={self.path} holds vectors of {stored} dimensions, "
                f"the embedder makes {self.dimensions}: point MARIONETTE_MEMORY_PATH at a "
                f"new file (and import an export of this one: exports hold words, not vectors)"
            )

    def _schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            # created_at: microseconds since the epoch, UTC (exact, and orders by time).
            """CREATE TABLE IF NOT EXISTS memory_items (
                vector_id INTEGER PRIMARY KEY, id TEXT NOT NULL, scope TEXT NOT NULL,
                kind TEXT NOT NULL, text TEXT NOT NULL, author TEXT, session_id TEXT,
                turn_id TEXT, created_at INTEGER NOT NULL, UNIQUE (scope, id))""",
            """CREATE INDEX IF NOT EXISTS memory_items_by_time
                ON memory_items (scope, created_at)""",
            """CREATE INDEX IF NOT EXISTS memory_items_by_author
                ON memory_items (author) WHERE author IS NOT NULL""",
            f"""CREATE VIRTUAL TABLE IF NOT EXISTS memory_vectors USING vec0(
                scope TEXT PARTITION KEY, embedding float[{self.dimensions}],
                chunk_size={CHUNK_SIZE})""",
            """CREATE TABLE IF NOT EXISTS memory_backups (
                seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, scope TEXT NOT NULL,
                made_at INTEGER NOT NULL, reason TEXT NOT NULL, items INTEGER NOT NULL,
                data TEXT NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS memory_backups_by_scope ON memory_backups (scope, seq)",
            """CREATE TABLE IF NOT EXISTS memory_snapshots (
                session_id TEXT PRIMARY KEY, data BLOB NOT NULL, saved_at INTEGER NOT NULL)""",
        ]

    # --- running -------------------------------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._db)

        return await asyncio.to_thread(locked)

    @contextmanager
    def _writing(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _reading(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One read transaction: its statements see one state of the file."""
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    # --- the store -----------------------------------------------------------------------

    async def add(self, items: Sequence[MemoryItem], vectors: Vector) -> int:
        matrix = as_matrix(vectors, len(items), self.dimensions)
        if not items:
            return 0

        def work(db: sqlite3.Connection) -> int:
            with self._writing(db):
                return sum(
                    self._insert(db, item, matrix[i].tobytes()) for i, item in enumerate(items)
                )

        return await self._run(work)

    def _insert(self, db: sqlite3.Connection, item: MemoryItem, vector: bytes) -> int:
        row = db.execute(
            f"INSERT INTO memory_items ({', '.join(ITEM_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (scope, id) DO NOTHING RETURNING vector_id",
            _item_row(item),
        ).fetchone()
        if row is None:
            return 0  # stored already: left as it is
        db.execute(
            "INSERT INTO memory_vectors (rowid, scope, embedding) VALUES (?, ?, ?)",
            (row[0], item.scope, vector),
        )
        return 1

    async def search(
        self, scopes: Sequence[str], vector: Vector, limit: int, *, min_score: float = -1.0
    ) -> list[MemoryHit]:
        query = as_query(vector, self.dimensions).tobytes()
        k = min(limit, KNN_MAX)
        if k <= 0 or not scopes:
            return []

        def work(db: sqlite3.Connection) -> list[MemoryHit]:
            hits: list[MemoryHit] = []
            with self._reading(db):
                for scope in dict.fromkeys(scopes):
                    # One KNN per scope: vec0 filters a partition key by `=` only.
                    # MATERIALIZED pins the order (KNN first, then its rows' items)
                    # whatever the planner estimates for a large items table.
                    rows = db.execute(
                        "WITH knn AS MATERIALIZED (SELECT rowid, distance FROM memory_vectors"
                        " WHERE embedding MATCH ? AND k = ? AND scope = ?) "
                        f"SELECT knn.distance, {ITEM_COLUMNS} FROM knn "
                        "JOIN memory_items ON memory_items.vector_id = knn.rowid",
                        (query, k, scope),
                    ).fetchall()
                    for distance, *item in rows:
                        # Unit vectors: squared L2 distance = 2 - 2 cos.
                        score = 1.0 - distance * distance / 2.0
                        if score >= min_score:
                            hits.append(MemoryHit(item=_item(item), score=score))
            hits.sort(key=lambda hit: hit.score, reverse=True)
            return hits[:limit]

        return await self._run(work)

    async def items(self, scope: str) -> list[MemoryItem]:
        def work(db: sqlite3.Connection) -> list[MemoryItem]:
            rows = db.execute(
                f"SELECT {ITEM_COLUMNS} FROM memory_items WHERE scope = ? "
                "ORDER BY created_at, vector_id",
                (scope,),
            ).fetchall()
            return [_item(row) for row in rows]

        return await self._run(work)

    async def scopes(self) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT DISTINCT scope FROM memory_items ORDER BY scope")
            return [scope for (scope,) in rows]

        return await self._run(work)

    async def stats(self, scope: str) -> ScopeStats:
        def work(db: sqlite3.Connection) -> ScopeStats:
            with self._reading(db):
                count, authors, oldest, newest = db.execute(
                    "SELECT count(*), count(DISTINCT author), min(created_at), max(created_at)"
                    " FROM memory_items WHERE scope = ?",
                    (scope,),
                ).fetchone()
                by_kind = dict(
                    db.execute(
                        "SELECT kind, count(*) FROM memory_items WHERE scope = ? GROUP BY kind",
                        (scope,),
                    ).fetchall()
                )
            return ScopeStats(
                scope=scope,
                items=count,
                by_kind=by_kind,
                authors=authors,
                oldest=None if oldest is None else _moment(oldest),
                newest=None if newest is None else _moment(newest),
            )

        return await self._run(work)

    async def delete(self, scope: str, ids: Sequence[str]) -> int:
        def work(db: sqlite3.Connection) -> int:
            with self._writing(db):
                gone = 0
                for start in range(0, len(ids), BATCH):
                    batch = list(ids[start : start + BATCH])
                    marks = ",".join("?" * len(batch))
                    rows = db.execute(
                        f"SELECT vector_id FROM memory_items WHERE scope = ? AND id IN ({marks})",
                        (scope, *batch),
                    ).fetchall()
                    gone += self._remove(db, [vector_id for (vector_id,) in rows])
                return gone

        return await self._run(work)

    def _remove(self, db: sqlite3.Connection, vector_ids: list[int]) -> int:
        # vec0 deletes by rowid one at a time (a delete with any other condition scans it).
        db.executemany("DELETE FROM memory_vectors WHERE rowid = ?", [(v,) for v in vector_ids])
        db.executemany("DELETE FROM memory_items WHERE vector_id = ?", [(v,) for v in vector_ids])
        return len(vector_ids)

    async def delete_author(self, author: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            with self._writing(db):
                rows = db.execute(
                    "SELECT vector_id FROM memory_items WHERE author = ?", (author,)
                ).fetchall()
                gone = self._remove(db, [vector_id for (vector_id,) in rows])
                backups = db.execute("SELECT seq, data FROM memory_backups").fetchall()
                for seq, data in backups:
                    held = decode_backup(data)
                    kept = [(item, vector) for item, vector in held if item.author != author]
                    if len(kept) != len(held):
                        db.execute(
                            "UPDATE memory_backups SET data = ?, items = ? WHERE seq = ?",
                            (encode_backup(kept), len(kept), seq),
                        )
                return gone

        return await self._run(work)

    def _scope_contents(self, db: sqlite3.Connection, scope: str) -> list[tuple[MemoryItem, bytes]]:
        rows = db.execute(
            f"SELECT memory_vectors.embedding, {ITEM_COLUMNS} FROM memory_items "
            "JOIN memory_vectors ON memory_vectors.rowid = memory_items.vector_id "
            "WHERE memory_items.scope = ? ORDER BY created_at, vector_id",
            (scope,),
        ).fetchall()
        return [(_item(item), vector) for vector, *item in rows]

    def _backup(self, db: sqlite3.Connection, scope: str, reason: str) -> LongTermBackupInfo:
        contents = self._scope_contents(db, scope)
        info = new_backup_info(scope, reason, len(contents))
        db.execute(
            "INSERT INTO memory_backups (id, scope, made_at, reason, items, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (info.id, scope, _micros(info.made_at), reason, info.items, encode_backup(contents)),
        )
        # Keep the newest backups_kept of the scope.
        db.execute(
            "DELETE FROM memory_backups WHERE scope = ? AND seq NOT IN (SELECT seq FROM "
            "memory_backups WHERE scope = ? ORDER BY seq DESC LIMIT ?)",
            (scope, scope, self.backups_kept),
        )
        return info

    async def backup(self, scope: str, reason: str) -> LongTermBackupInfo:
        def work(db: sqlite3.Connection) -> LongTermBackupInfo:
            with self._writing(db):
                return self._backup(db, scope, reason)

        return await self._run(work)

    async def backups(self, scope: str) -> list[LongTermBackupInfo]:
        def work(db: sqlite3.Connection) -> list[LongTermBackupInfo]:
            rows = db.execute(
                "SELECT id, made_at, items, reason FROM memory_backups WHERE scope = ? "
                "ORDER BY seq DESC",
                (scope,),
            ).fetchall()
            return [
                LongTermBackupInfo(
                    id=id_, scope=scope, made_at=_moment(made_at), items=count, reason=reason
                )
                for id_, made_at, count, reason in rows
            ]

        return await self._run(work)

    def _empty(self, db: sqlite3.Connection, scope: str) -> None:
        rows = db.execute("SELECT vector_id FROM memory_items WHERE scope = ?", (scope,))
        self._remove(db, [vector_id for (vector_id,) in rows.fetchall()])

    async def reset(self, scope: str) -> LongTermBackupInfo:
        def work(db: sqlite3.Connection) -> LongTermBackupInfo:
            with self._writing(db):
                info = self._backup(db, scope, "reset")
                self._empty(db, scope)
                return info

        return await self._run(work)

    async def restore(self, scope: str, backup_id: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            with self._writing(db):
                row = db.execute(
                    "SELECT data FROM memory_backups WHERE scope = ? AND id = ?",
                    (scope, backup_id),
                ).fetchone()
                if row is None:
                    raise KeyError(f"no backup {backup_id!r} of scope {scope!r}")
                self._empty(db, scope)
                return sum(self._insert(db, item, vector) for item, vector in decode_backup(row[0]))

        return await self._run(work)

    async def save_snapshot(self, session_id: str, data: bytes) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO memory_snapshots (session_id, data, saved_at) VALUES (?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET data = excluded.data, "
                "saved_at = excluded.saved_at",
                (session_id, data, _micros(datetime.now(UTC))),
            )

        await self._run(work)

    async def load_snapshot(self, session_id: str) -> bytes | None:
        def work(db: sqlite3.Connection) -> bytes | None:
            row = db.execute(
                "SELECT data FROM memory_snapshots WHERE session_id = ?", (session_id,)
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._run(work)

    async def snapshot_sessions(self) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT session_id FROM memory_snapshots ORDER BY session_id")
            return [session_id for (session_id,) in rows]

        return await self._run(work)

    async def close(self) -> None:
        await self._run(lambda db: db.close())
