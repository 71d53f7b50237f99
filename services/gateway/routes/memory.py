"""Memory API: what the character remembers of a session, its backups, clear and restore.

Reads come straight from the store policy keeps memory in (services.policy.memory). A
change goes out as a control message (MemoryClear, MemoryRestore) that policy applies
under the session's lock, since it writes that memory with every turn; the answer is
what was published, and the memory changes a moment later.
"""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.control import MemoryClear, MemoryRestore
from contracts.envelope import Identifier
from contracts.limits import MAX_ID_CHARS
from services.gateway.link import new_id
from services.gateway.routes.control import Published, control, link_of
from services.gateway.security import Access, requires
from services.policy.memory import BackupInfo, Memory, MemoryBackups, MemoryStore
from services.policy.settings import PolicySettings
from services.settings import load_settings

router = APIRouter(prefix="/api/sessions/{session}/memory", tags=["memory"])
Reader = Annotated[str, Depends(requires(Access.READ))]
Operator = Annotated[str, Depends(requires(Access.OPERATE))]
Session = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9._:\-]+$", min_length=1, max_length=MAX_ID_CHARS,
        description="A session id (an NPC dialogue's is `<npc>:<player>`).",
    ),
]  # fmt: skip


class FieldError(HTTPException):
    """An error that names the field of the request at fault (`fields` in the answer)."""

    def __init__(self, status: int, field: str, problem: str) -> None:
        super().__init__(status, problem)
        self.fields = [{"field": field, "problem": problem}]


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backup_id: Identifier = Field(description="A backup's id, from .../memory/backups.")


class MemoryAnswer(BaseModel):
    published: Published
    backup_id: str = Field(description="The backup cleared memory is kept as / restored from.")


def stores(request: Request) -> tuple[MemoryStore, MemoryBackups]:
    """Policy's memory and backups, as policy's settings place them."""
    settings = load_settings(PolicySettings)
    store = link_of(request).bus.store
    retention_s = settings.memory_backup_days * 86_400
    return MemoryStore(store, settings.memory_window_s), MemoryBackups(store, retention_s)


@router.get("", response_model=Memory)
async def read_memory(session: Session, request: Request, who: Reader) -> Memory:
    """The session's memory as policy keeps it (empty when it has none)."""
    memories, _ = stores(request)
    return await memories.load(session)


@router.get(
    "/export",
    response_class=JSONResponse,
    responses={200: {"description": "A JSON file: the session, when, and its memory."}},
)
async def export_memory(session: Session, request: Request, who: Reader) -> JSONResponse:
    """The session's memory as a JSON download."""
    memories, _ = stores(request)
    memory = await memories.load(session)
    body: dict[str, Any] = {
        "session": session,
        "exported_at": datetime.now(UTC).isoformat(),
        "memory": memory.model_dump(mode="json"),
    }
    name = "memory-" + session.replace(":", "_") + ".json"  # ':' is not allowed in Windows names
    return JSONResponse(body, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/backups", response_model=list[BackupInfo])
async def list_backups(session: Session, request: Request, who: Reader) -> list[BackupInfo]:
    """The session's memory backups, newest first (each clear keeps one)."""
    _, backups = stores(request)
    return await backups.index(session)


@router.delete("", response_model=MemoryAnswer)
async def clear_memory(session: Session, request: Request, who: Operator) -> MemoryAnswer:
    """Forget the session's memory; policy keeps a backup first, under `backup_id`."""
    backup_id = new_id("backup")
    message = control(MemoryClear(backup_id=backup_id), session)
    published = await link_of(request).publish(message)
    return MemoryAnswer(published=Published(**published), backup_id=backup_id)


@router.post("/restore", response_model=MemoryAnswer)
async def restore_memory(
    session: Session, body: RestoreRequest, request: Request, who: Operator
) -> MemoryAnswer:
    """Bring back a backup as the session's memory (what it remembers now is replaced)."""
    _, backups = stores(request)
    if await backups.get(session, body.backup_id) is None:
        problem = f"session {session!r} has no memory backup {body.backup_id!r}"
        raise FieldError(404, "body.backup_id", problem)
    message = control(MemoryRestore(backup_id=body.backup_id), session)
    published = await link_of(request).publish(message)
    return MemoryAnswer(published=Published(**published), backup_id=body.backup_id)
