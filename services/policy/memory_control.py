"""Memory commands on control, applied by one policy replica each (the first to claim the
message id): clear a session's memory (keeping a backup), restore a backup, and forget a
viewer everywhere (a privacy request)."""

import asyncio
import logging
from collections.abc import Callable

from contracts.control import MemoryClear, MemoryRestore
from services.bus.stage import KeyValue
from services.memory.long_term import LongTermMemory
from services.policy.memory import APPLIED_PREFIX, Memory, MemoryBackups, MemoryStore, claim_once

log = logging.getLogger("marionette.policy")


class MemoryControl:
    def __init__(
        self,
        store: KeyValue,
        memories: MemoryStore,
        backups: MemoryBackups,
        lock_of: Callable[[str], asyncio.Lock],
        long_term: LongTermMemory | None,
    ) -> None:
        """lock_of(session): the session's lock, held by its turns while they change its
        memory."""
        self.store = store
        self.memories = memories
        self.backups = backups
        self.lock_of = lock_of
        self.long_term = long_term

    async def _first(self, message_id: str) -> bool:
        """Whether this replica applies the message (no other did, nor this one before)."""
        name = f"{APPLIED_PREFIX}{message_id}"
        return await claim_once(self.store, name, self.backups.retention_s)

    async def change(
        self, session: str, message_id: str, command: MemoryClear | MemoryRestore
    ) -> None:
        """Clear (keeping a backup) or restore a session's memory."""
        async with self.lock_of(session):
            if not await self._first(message_id):
                return
            if isinstance(command, MemoryClear):
                memory = await self.memories.load(session)
                await self.backups.keep(session, command.backup_id, memory)
                await self.memories.save(session, Memory())
                log.info("%s: memory cleared (backup %s)", session, command.backup_id)
                return
            backup = await self.backups.get(session, command.backup_id)
            if backup is None:
                log.warning("%s: no memory backup %s to restore", session, command.backup_id)
                return
            await self.memories.save(session, backup.memory)
            log.info("%s: memory restored from backup %s", session, command.backup_id)

    async def forget(self, message_id: str, author: str) -> None:
        """A viewer asked to be forgotten: their lines go from every session's memory, its
        backups and its copies (even those too old to be restored), and from long-term
        memory."""
        if not await self._first(message_id):
            return
        changed = 0
        async for session in self.memories.sessions():
            async with self.lock_of(session):
                memory = await self.memories.load(session)
                if memory.scrub(author):
                    await self.memories.save(session, memory)
                    changed += 1
        backups = await self.backups.scrub(author)
        items = copies = 0
        if self.long_term is not None:
            items = await self.long_term.forget_author(author)
            copies = await self._scrub_snapshots(author)
        log.info("forgot %s: %d sessions, %d backups, %d copies, %d long-term items",
                 author, changed, backups, copies, items)  # fmt: skip

    async def _scrub_snapshots(self, author: str) -> int:
        assert self.long_term is not None
        store = self.long_term.store
        changed = 0
        for session in await store.snapshot_sessions():
            async with self.lock_of(session):
                raw = await store.load_snapshot(session)
                if raw is None:
                    continue
                memory = Memory.model_validate_json(raw)
                if memory.scrub(author):
                    await store.save_snapshot(session, memory.model_dump_json().encode())
                    changed += 1
        return changed
