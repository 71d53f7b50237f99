"""What long-term memory holds: items, their scopes, and search hits."""

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ITEM_CHARS = 1_000

ItemKind = Literal["fact", "episode", "note"]
"""fact: something a user stated (a line of theirs, as said); episode: a summary of part of
a conversation; note: what the character chose to remember (the remember tool)."""

Scope = Annotated[
    str, StringConstraints(min_length=1, max_length=160, pattern=r"^[A-Za-z0-9._:\-]+$")
]
"""Who remembers, and for whom: `character:<persona>` (the live character, across all its
sessions) or `session:<session_id>` (one conversation: an NPC's with one player)."""


def character_scope(persona: str) -> str:
    return f"character:{_safe(persona)}"


def session_scope(session_id: str) -> str:
    return f"session:{session_id}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)[:120] or "-"


class MemoryItem(BaseModel):
    """One remembered thing, in words (its vector is the store's business)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64, description="Stable: the same item, the same id.")
    scope: Scope
    kind: ItemKind
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ITEM_CHARS)]
    author: str | None = Field(
        default=None, max_length=64, description="The viewer it came from (None: the streamer)."
    )
    session_id: str | None = Field(default=None, max_length=64)
    turn_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @staticmethod
    def make_id(scope: str, kind: str, text: str, turn_id: str | None = None) -> str:
        """The same statement of the same turn gives the same id: a turn redone after a
        crash stores nothing twice."""
        key = f"{scope}\x1f{kind}\x1f{turn_id or ''}\x1f{text}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]


class MemoryHit(BaseModel):
    """A search result: the item and how close it is (cosine similarity, -1..1)."""

    item: MemoryItem
    score: float


class ScopeStats(BaseModel):
    scope: str
    items: int
    by_kind: dict[str, int]
    authors: int
    oldest: datetime | None
    newest: datetime | None


class LongTermBackupInfo(BaseModel):
    """A scope's items as they were before a reset (or on request)."""

    id: str
    scope: str
    made_at: datetime
    items: int
    reason: str = ""
