"""Long-term memory API: scopes and their items, search by meaning, export and import,
reset, backups and restore, and a viewer's privacy request.

The gateway reads and writes the store policy uses (MARIONETTE_MEMORY_*: the same sqlite
file on this machine, or the bus's Redis). Unlike short-term memory these calls change the
store directly, not through a control message: every store write is one transaction, and
policy only adds to a scope, so nothing it holds can be lost by a write from here.

Forgetting a viewer is the exception that does both: their long-term items go here, and a
MemoryForget goes out for policy to scrub them from every session's short-term memory.

An import body is the export's JSON, so the gateway lets it be larger than other bodies
(MAX_IMPORT_BYTES in services/gateway/app.py). Embedding is its cost, about 3.7 ms an item
on a busy two-core machine: a very large export goes faster with `marionette memory import`,
which no HTTP client waits on.
"""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.control import MemoryForget
from contracts.envelope import Identifier
from contracts.limits import MAX_AUTHOR_CHARS
from services.errors import StageStartError
from services.gateway.routes.control import Published, control, link_of
from services.gateway.routes.memory import FieldError
from services.gateway.security import Access, requires
from services.memory.access import (
    KNN_MAX,
    OFF,
    ImportProblem,
    ImportRequest,
    LongTermAccess,
    StoreUnavailable,
    export_document,
    export_file_name,
    rescoped,
)
from services.memory.items import LongTermBackupInfo, MemoryHit, MemoryItem, ScopeStats
from services.memory.long_term import LongTermMemory
from services.memory.settings import MemorySettings
from services.memory.store import LongTermStore
from services.settings import load_settings

router = APIRouter(prefix="/api/memory", tags=["memory"])
Reader = Annotated[str, Depends(requires(Access.READ))]
Operator = Annotated[str, Depends(requires(Access.OPERATE))]
ScopePath = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9._:\-]+$", min_length=1, max_length=160,
        description="`character:<persona>` or `session:<session_id>`.",
    ),
]  # fmt: skip
Author = Annotated[
    str,
    Path(min_length=1, max_length=MAX_AUTHOR_CHARS, description="As their chat lines carry it."),
]
SEARCH_LIMIT = 10
LIST_LIMIT = 1_000


# --- the routes ----------------------------------------------------------------------------------


class ItemsAnswer(BaseModel):
    scope: str
    query: str | None = Field(description="The search (`?q=`), if any.")
    author: str | None = Field(description="Only this viewer's items (`?author=`), if given.")
    total: int = Field(description="Items that matched (a listing), or hits found (a search).")
    items: list[MemoryItem] = Field(description="A listing: oldest first (empty for a search).")
    hits: list[MemoryHit] = Field(description="A search: best first (empty for a listing).")


class ImportAnswer(BaseModel):
    scope: str
    items: int = Field(description="Items in the request.")
    new: int = Field(description="Items that were not stored already (the rest were left).")
    import_ms: float = Field(description="Time spent embedding and storing, milliseconds.")


class BackupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="on request", max_length=200)


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backup_id: Identifier = Field(description="A backup's id, from .../backups.")


class RestoreAnswer(BaseModel):
    scope: str
    backup_id: str
    items: int = Field(description="Items the scope holds now (what it held before is gone).")


class DeleteAnswer(BaseModel):
    scope: str
    item_id: str
    deleted: int


class ForgetAnswer(BaseModel):
    author: str
    long_term: bool = Field(description="Whether long-term memory is on (else nothing to delete).")
    long_term_items: int = Field(description="Long-term items of theirs deleted (backups too).")
    published: Published = Field(description="The MemoryForget that has policy scrub short-term.")


def access_of(request: Request) -> LongTermAccess:
    """The app's long-term memory, from MARIONETTE_MEMORY_* read on first use."""
    state = request.app.state
    if getattr(state, "long_term", None) is None:
        try:
            settings = load_settings(MemorySettings)
        except StageStartError as exc:
            raise HTTPException(503, str(exc)) from None
        state.long_term = LongTermAccess(settings, link_of(request).bus.store)
    access: LongTermAccess = state.long_term
    return access


def turned_on(request: Request, changes: bool = False) -> LongTermAccess:
    """The access, once long-term memory is known to be on: 404 (a read) or 409 (a change)
    when it is off."""
    access = access_of(request)
    if not access.settings.long_term:
        raise HTTPException(409 if changes else 404, OFF)
    return access


async def store_for(request: Request, changes: bool = False) -> LongTermStore:
    """The store, on; 503 naming the fix when it cannot open."""
    return await store_of(turned_on(request, changes))


async def store_of(access: LongTermAccess) -> LongTermStore:
    try:
        return await access.store()
    except StoreUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


async def memory_of(access: LongTermAccess) -> LongTermMemory:
    try:
        return await access.memory()
    except StoreUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


@router.get("/scopes", response_model=list[ScopeStats])
async def list_scopes(request: Request, who: Reader) -> list[ScopeStats]:
    """Every scope that holds items, with its counts."""
    store = await store_for(request)
    return [await store.stats(scope) for scope in await store.scopes()]


@router.get("/scopes/{scope}", response_model=ScopeStats)
async def scope_stats(scope: ScopePath, request: Request, who: Reader) -> ScopeStats:
    """One scope's counts (all zero for a scope that holds nothing)."""
    return await (await store_for(request)).stats(scope)


@router.get("/scopes/{scope}/items", response_model=ItemsAnswer)
async def scope_items(
    scope: ScopePath, request: Request, who: Reader,
    q: Annotated[str | None, Query(min_length=1, max_length=1_000,
                                   description="Search by meaning: hits, best first.")] = None,
    author: Annotated[str | None, Query(min_length=1, max_length=MAX_AUTHOR_CHARS,
                                        description="Only this viewer's items.")] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000, description=
                                       f"At most; default {SEARCH_LIMIT} hits, "
                                       f"{LIST_LIMIT} items.")] = None,
    min_score: Annotated[float, Query(ge=-1, le=1, description=
                                      "A search's lowest cosine similarity.")] = -1.0,
) -> ItemsAnswer:  # fmt: skip
    """The scope's items, oldest first; with `q`, the closest to it in meaning instead."""
    access = turned_on(request)
    if q is not None:
        await memory_of(access)  # 503 naming the fix if the embedder's model is missing
        hits = await access.search(
            scope, q, min(limit or SEARCH_LIMIT, KNN_MAX), author=author, min_score=min_score
        )
        return ItemsAnswer(scope=scope, query=q, author=author, total=len(hits), items=[],
                           hits=hits)  # fmt: skip
    items = await (await store_of(access)).items(scope)
    if author is not None:
        items = [item for item in items if item.author == author]
    return ItemsAnswer(scope=scope, query=None, author=author, total=len(items),
                       items=items[: limit or LIST_LIMIT], hits=[])  # fmt: skip


@router.get(
    "/scopes/{scope}/export",
    response_class=JSONResponse,
    responses={200: {"description": "A JSON file: scope, exported_at, embedder, items."}},
)
async def export_scope(scope: ScopePath, request: Request, who: Reader) -> JSONResponse:
    """The scope's items as a JSON download (what .../import takes)."""
    items = await (await store_for(request)).items(scope)
    headers = {"Content-Disposition": f'attachment; filename="{export_file_name(scope)}"'}
    return JSONResponse(export_document(scope, items), headers=headers)


@router.post("/scopes/{scope}/import", response_model=ImportAnswer)
async def import_scope(
    scope: ScopePath, body: ImportRequest, request: Request, who: Operator
) -> ImportAnswer:
    """Add an export's items to the scope (each moves to it); an item stored already is
    left as it is, so importing twice adds nothing."""
    access = turned_on(request, changes=True)
    try:
        items = rescoped(scope, body.items)
    except ImportProblem as exc:
        error = FieldError(422, "body." + exc.fields[0]["field"], "invalid items: " + str(exc))
        error.fields = [{**f, "field": "body." + f["field"]} for f in exc.fields]
        raise error from None
    await memory_of(access)
    started = asyncio.get_running_loop().time()
    new = await access.import_items(items)
    elapsed_ms = (asyncio.get_running_loop().time() - started) * 1000
    return ImportAnswer(scope=scope, items=len(items), new=new, import_ms=elapsed_ms)


@router.post("/scopes/{scope}/reset", response_model=LongTermBackupInfo)
async def reset_scope(scope: ScopePath, request: Request, who: Operator) -> LongTermBackupInfo:
    """Empty the scope, keeping a backup of it first (the answer; .../restore brings it back)."""
    return await (await store_for(request, changes=True)).reset(scope)


@router.post("/scopes/{scope}/backups", response_model=LongTermBackupInfo)
async def backup_scope(
    scope: ScopePath, request: Request, who: Operator, body: BackupRequest | None = None
) -> LongTermBackupInfo:
    """Keep a backup of the scope as it is now (a scope keeps its newest
    MARIONETTE_MEMORY_BACKUPS_KEPT)."""
    store = await store_for(request, changes=True)
    return await store.backup(scope, (body or BackupRequest()).reason)


@router.get("/scopes/{scope}/backups", response_model=list[LongTermBackupInfo])
async def list_backups(scope: ScopePath, request: Request, who: Reader) -> list[LongTermBackupInfo]:
    """The scope's backups, newest first."""
    return await (await store_for(request)).backups(scope)


@router.post("/scopes/{scope}/restore", response_model=RestoreAnswer)
async def restore_scope(
    scope: ScopePath, body: RestoreRequest, request: Request, who: Operator
) -> RestoreAnswer:
    """Replace the scope's items with a backup's (take a backup first to keep them)."""
    store = await store_for(request, changes=True)
    try:
        count = await store.restore(scope, body.backup_id)
    except KeyError:
        problem = f"scope {scope!r} has no backup {body.backup_id!r} (see .../backups)"
        raise FieldError(404, "body.backup_id", problem) from None
    return RestoreAnswer(scope=scope, backup_id=body.backup_id, items=count)


@router.delete("/scopes/{scope}/items/{item_id}", response_model=DeleteAnswer)
async def delete_item(
    scope: ScopePath,
    item_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    who: Operator,
) -> DeleteAnswer:
    """Delete one item (its backups keep it: a reset or restore may bring it back)."""
    store = await store_for(request, changes=True)
    if await store.delete(scope, [item_id]) == 0:
        raise FieldError(404, "path.item_id", f"scope {scope!r} has no item {item_id!r}")
    return DeleteAnswer(scope=scope, item_id=item_id, deleted=1)


@router.delete("/viewers/{author}", response_model=ForgetAnswer)
async def forget_viewer(author: Author, request: Request, who: Operator) -> ForgetAnswer:
    """A privacy request: delete everything remembered of this viewer. Their long-term
    items go now, in every scope and backup; policy scrubs their lines from short-term
    memory, its backups and snapshots when it takes the MemoryForget published here.
    With long-term memory off, only the MemoryForget goes out."""
    access = access_of(request)
    items = 0
    if access.settings.long_term:
        items = await (await store_of(access)).delete_author(author)
    published = await link_of(request).publish(control(MemoryForget(author=author)))
    return ForgetAnswer(author=author, long_term=access.settings.long_term,
                        long_term_items=items, published=Published(**published))  # fmt: skip
