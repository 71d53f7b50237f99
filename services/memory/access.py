"""Long-term memory as the operators' tools use it (the gateway's /api/memory and
`marionette memory`): the store opened on first use, the export format and its import.
Listing, export, reset, backups and forgetting never load the embedder; a search or an
import does.
"""

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from services.errors import StageStartError
from services.memory.embedder import MODEL_NAME, Embedder
from services.memory.items import MemoryHit, MemoryItem
from services.memory.long_term import LongTermMemory, open_store
from services.memory.settings import MemorySettings
from services.memory.store import LongTermStore
from services.models.files import ModelMissing

_ITEMS = TypeAdapter(list[MemoryItem])
KNN_MAX = 4_096  # the most a store search returns (sqlite-vec's bound)
OFF = (
    "long-term memory is off (MARIONETTE_MEMORY_LONG_TERM=false): set "
    "MARIONETTE_MEMORY_LONG_TERM=true for the gateway and policy"
)

# --- the store, opened on first use ----------------------------------------------------------


class StoreUnavailable(Exception):
    """The store or the embedder cannot open; the message names the setting and the fix."""


class LongTermAccess:
    """Long-term memory as the operators' tools use it. The store opens on first use; the
    embedder (a model load, about half a second) only when a search or an import turns
    words into vectors, so listing, export, reset, backups and forgetting never load it."""

    def __init__(self, settings: MemorySettings, redis: object | None = None) -> None:
        self.settings = settings
        self._redis = redis
        self._store: LongTermStore | None = None
        self._memory: LongTermMemory | None = None
        self._opening = asyncio.Lock()

    async def store(self) -> LongTermStore:
        async with self._opening:
            if self._store is None:
                try:  # the sqlite file opens (and may create its tables) off the event loop
                    self._store = await asyncio.to_thread(open_store, self.settings, self._redis)
                except StageStartError as exc:  # ConfigError, SqliteVecUnavailable
                    raise StoreUnavailable(str(exc)) from None
            return self._store

    async def memory(self) -> LongTermMemory:
        """The store with the embedder: remember and recall in words."""
        store = await self.store()
        async with self._opening:
            if self._memory is None:
                memory = LongTermMemory(store, Embedder, self.settings)  # loaded on first use
                try:
                    await memory.loaded()
                except ModelMissing as exc:
                    raise StoreUnavailable(str(exc)) from None
                self._memory = memory
            return self._memory

    async def search(
        self, scope: str, query: str, limit: int, *, author: str | None = None,
        min_score: float = -1.0,
    ) -> list[MemoryHit]:  # fmt: skip
        """The scope's items closest to query in meaning, best first, with their cosine
        similarity as the store has it (policy's recall adds a bonus for the asking viewer
        and a floor; this does neither, so an operator sees the plain ranking)."""
        memory = await self.memory()
        vector = await memory.embed_one(query)
        # An author filter applies after the nearest are found: ask for as many as there are.
        wanted = KNN_MAX if author is not None else limit
        hits = await memory.store.search([scope], vector, wanted, min_score=min_score)
        return [h for h in hits if author is None or h.item.author == author][:limit]

    async def import_items(self, items: Sequence[MemoryItem]) -> int:
        """Store items (embedded again here); how many were new."""
        return await (await self.memory()).import_items(items)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = self._memory = None


# --- the export format -------------------------------------------------------------------------


class ImportRequest(BaseModel):
    """An export (`scope`, `exported_at` and `embedder` are informative), or just `items`."""

    model_config = ConfigDict(extra="forbid")
    scope: str | None = Field(default=None, description="The exported scope (items move).")
    exported_at: datetime | None = None
    embedder: str | None = Field(
        default=None, description="The exporting store's; items are embedded again anyway."
    )
    items: list[dict[str, Any]] = Field(
        description="Items as exported. Each takes the path's scope; `id` and `created_at` "
        "may be left out (the id is then made from the scope, kind, text and turn)."
    )


class ImportProblem(Exception):
    """Items that are not memory items; `fields` names each problem (`items.3.text`)."""

    def __init__(self, fields: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{f['field']}: {f['problem']}" for f in fields))
        self.fields = fields


def export_document(scope: str, items: Sequence[MemoryItem]) -> dict[str, Any]:
    """What an export holds: words, not vectors (an import embeds them again, so an export
    outlives a change of embedder)."""
    return {
        "scope": scope,
        "exported_at": datetime.now(UTC).isoformat(),
        "embedder": MODEL_NAME,
        "items": [item.model_dump(mode="json") for item in items],
    }


def export_file_name(scope: str) -> str:
    return "long-term-" + scope.replace(":", "_") + ".json"  # ':' is not allowed on Windows


def rescoped(scope: str, raw: Sequence[Mapping[str, Any]]) -> list[MemoryItem]:
    """Items of an export, moved to `scope` (another character's memory may be given to
    this one); a missing id is made as policy makes it. ImportProblem names what is wrong."""
    moved: list[dict[str, Any]] = []
    for entry in raw:
        item = {**entry, "scope": scope}
        if "id" not in item:  # (made even for an item without text: its error is the text's)
            kind, text, turn = str(item.get("kind")), str(item.get("text")), item.get("turn_id")
            item["id"] = MemoryItem.make_id(
                scope, kind, text, turn if isinstance(turn, str) else None
            )
        moved.append(item)
    try:
        return _ITEMS.validate_python(moved)
    except ValidationError as exc:
        fields = [
            {"field": "items." + ".".join(map(str, e["loc"])), "problem": e["msg"]}
            for e in exc.errors()[:20]
        ]
        raise ImportProblem(fields) from None
