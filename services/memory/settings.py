"""Long-term memory settings: MARIONETTE_MEMORY_* (or [memory] in marionette.toml).

Read by policy (which remembers and recalls), the gateway and the CLI (which inspect,
export, import, forget and reset): all must point at the same store.
"""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.settings import MarionetteSettings


class MemorySettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_MEMORY_")
    toml_table: ClassVar[str | None] = "memory"

    long_term: bool = Field(
        default=True,
        description="Remember facts and episodes across sessions and recall them each turn.",
    )
    store: Literal["sqlite", "redis"] = Field(
        default="sqlite",
        description="sqlite: a file shared by the processes of one machine (sqlite-vec); "
        "redis: the bus's Redis, shared by every machine.",
    )
    path: Path = Field(
        default=Path(".marionette/memory.sqlite3"),
        description="The sqlite store's file (every process of one machine opens the same).",
    )
    scope: Literal["character", "session"] = Field(
        default="character",
        description="The live character's memory: character (one memory across all its "
        "sessions) or session (each session its own). NPCs always remember each player apart.",
    )
    recall_limit: int = Field(default=3, ge=0, le=20, description="Memories added to a prompt.")
    recall_min_score: float = Field(
        default=0.35, ge=-1, le=1, description="Cosine similarity a memory needs to be recalled."
    )
    recall_budget_ms: float = Field(
        default=20, gt=0, le=5_000,
        description="Longest a turn waits for recall; past it, the turn goes on without.",
    )  # fmt: skip
    author_bonus: float = Field(
        default=0.1, ge=0, le=1,
        description="Added to the score of what the asking viewer said themselves "
        "(\"my cat\" means theirs, not another viewer's).",
    )  # fmt: skip
    backups_kept: int = Field(default=20, ge=1, le=1000, description="Backups kept per scope.")
    snapshots: bool = Field(
        default=True,
        description="Keep a copy of each session's short-term memory in the store, restored "
        "when Redis has lost it (within policy's memory window).",
    )
