"""The interface a long-term store implements.

Vectors are float32, unit length (the embedder's), DIMENSIONS long; the score of a hit
is their dot product (cosine similarity). A store is shared by every process that opens
it with the same settings: policy writes and searches, the gateway and the CLI read,
export, import, forget and reset.

All methods are async; an embedded store runs its blocking work off the event loop.
"""

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.memory.items import LongTermBackupInfo, MemoryHit, MemoryItem, ScopeStats

Vector = npt.NDArray[np.float32]


class LongTermStore(Protocol):
    dimensions: int

    async def add(self, items: Sequence[MemoryItem], vectors: Vector) -> int:
        """Store items (row i of vectors is item i's); an id already stored is left as it
        is. Returns how many were new."""
        ...

    async def search(
        self, scopes: Sequence[str], vector: Vector, limit: int, *, min_score: float = -1.0
    ) -> list[MemoryHit]:
        """The items of these scopes closest to vector, best first, at most limit, none
        below min_score."""
        ...

    async def items(self, scope: str) -> list[MemoryItem]:
        """Every item of a scope, oldest first (export)."""
        ...

    async def scopes(self) -> list[str]: ...

    async def stats(self, scope: str) -> ScopeStats: ...

    async def delete_author(self, author: str) -> int:
        """Delete every item from this viewer, in every scope, backups included (a privacy
        request: nothing of theirs is kept). Returns how many items went."""
        ...

    async def delete(self, scope: str, ids: Sequence[str]) -> int: ...

    async def backup(self, scope: str, reason: str) -> LongTermBackupInfo:
        """Keep a copy of the scope's items (with their vectors)."""
        ...

    async def backups(self, scope: str) -> list[LongTermBackupInfo]:
        """Newest first."""
        ...

    async def reset(self, scope: str) -> LongTermBackupInfo:
        """Back the scope up, then empty it. Returns the backup."""
        ...

    async def restore(self, scope: str, backup_id: str) -> int:
        """Replace the scope's items with a backup's (KeyError if there is no such backup).
        Returns how many items it now holds."""
        ...

    async def save_snapshot(self, session_id: str, data: bytes) -> None:
        """Keep the latest short-term memory of a session (a copy, for after a restart)."""
        ...

    async def load_snapshot(self, session_id: str) -> bytes | None: ...

    async def snapshot_sessions(self) -> list[str]:
        """Sessions with a snapshot (a privacy request rewrites each)."""
        ...

    async def close(self) -> None: ...
