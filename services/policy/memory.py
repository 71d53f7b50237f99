"""What the character remembers of a session: recent messages word for word, and a summary.

Kept in Redis, so a restarted (or another) replica picks the conversation up; memory
older than the window is not restored.

A session's memory can be cleared (control MemoryClear) and brought back (MemoryRestore):
a clear first keeps the memory as a backup, `marionette:policy:memory-backup:<session>:<id>`,
listed in `marionette:policy:memory-backups:<session>`; both expire after the backup
retention (memory_backup_days).
"""

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Protocol

from pydantic import BaseModel, Field, TypeAdapter
from redis.asyncio import Redis

from services.bus.stage import KeyValue

log = logging.getLogger("marionette.policy")

MEMORY_PREFIX = "marionette:policy:memory:"
BACKUP_PREFIX = "marionette:policy:memory-backup:"
BACKUP_INDEX_PREFIX = "marionette:policy:memory-backups:"
APPLIED_PREFIX = "marionette:policy:memory-applied:"
MAX_BACKUPS_LISTED = 100
"""A session's index keeps the newest ones; older backups still expire on their own."""


class Message(BaseModel):
    role: str  # "user" or "assistant"
    content: str
    turn_id: str | None = None
    interrupted: bool = False  # the user talked over it: content is what they heard
    author: str | None = None  # who said a user message (None: the microphone)
    said: str | None = None  # a user message as written, for moderation's view of a session
    generated: str | None = None  # a reply as the LLM wrote it, when it was said as written

    def for_prompt(self) -> dict[str, str]:
        # A dash, as in a script, tells the model the line was cut off there.
        if self.interrupted:
            return {"role": self.role, "content": f"{self.content}—"}
        # The LLM's own text (its expression tags in place) is what its cache holds
        # after the turn: the next prompt then matches it up to the new line, and only
        # the new line is evaluated (~25 tokens, not the whole reply again).
        return {"role": self.role, "content": self.generated or self.content}


class Memory(BaseModel):
    summary: str = ""
    messages: list[Message] = Field(default_factory=list)
    since_summary: int = 0
    updated_at: float = 0.0

    def add(self, message: Message) -> None:
        self.messages.append(message)
        self.since_summary += 1

    def remember(
        self,
        turn_id: str,
        said_to: str,
        reply: str,
        *,
        author: str | None = None,
        said: str | None = None,
        generated: str | None = None,
    ) -> None:
        """A turn: what the user said (as the prompt put it, and as written) and the reply,
        once (a turn redone after a crash is not remembered twice). generated: the reply
        as the LLM wrote it, if it was said as written (tags aside)."""
        if any(m.turn_id == turn_id for m in self.messages):
            return
        self.add(Message(role="user", content=said_to, turn_id=turn_id, author=author, said=said))
        self.add(Message(role="assistant", content=reply, turn_id=turn_id, generated=generated))

    def lines_of(self, author: str | None, count: int) -> list[str]:
        """The last lines one author wrote (None: the microphone), oldest first."""
        lines = [
            m.said or m.content for m in self.messages if m.role == "user" and m.author == author
        ]
        return lines[-count:]

    def recent_lines(self, count: int) -> list[str]:
        """The last lines anyone wrote or said in the session, oldest first."""
        return [m.said or m.content for m in self.messages if m.role == "user"][-count:]

    def forget(self, turn_id: str) -> bool:
        """Drop a turn the user never finished (a preemptive turn they went on from);
        False if it is not here."""
        kept = [m for m in self.messages if m.turn_id != turn_id]
        dropped = len(self.messages) - len(kept)
        self.messages = kept
        self.since_summary = max(0, self.since_summary - dropped)
        return dropped > 0

    def cut_short(self, turn_id: str, heard: str) -> bool:
        """Keep only what the user heard of the reply to `turn_id`; False if not found."""
        for message in reversed(self.messages):
            if message.role == "assistant" and message.turn_id == turn_id:
                message.content, message.interrupted = heard, True
                return True
        return False

    def as_prompt(self) -> list[dict[str, str]]:
        return [m.for_prompt() for m in self.messages]

    def scrub(self, author: str) -> bool:
        """Forget one viewer: their lines and the replies to them; the summary too if it
        names them (it is prose: what else of theirs it holds cannot be told apart).
        False if nothing of theirs was here."""
        turns = {m.turn_id for m in self.messages if m.role == "user" and m.author == author}
        kept = [m for m in self.messages if not (m.turn_id in turns or m.author == author)]
        named = author.lower() in self.summary.lower()
        if len(kept) == len(self.messages) and not named:
            return False
        self.messages = kept
        if named:
            self.summary = ""
        return True


class Snapshots(Protocol):
    """Where a copy of each session's memory is kept beside Redis (the long-term store)."""

    async def save_snapshot(self, session_id: str, data: bytes) -> None: ...
    async def load_snapshot(self, session_id: str) -> bytes | None: ...


class MemoryStore:
    """Sessions' memory in the shared store; with snapshots, also copied there, so a
    session's memory that Redis lost (a restart without persistence) comes back within
    the window."""

    def __init__(self, client: KeyValue, window_s: int, snapshots: Snapshots | None = None) -> None:
        self.client = client
        self.window_s = window_s
        self.snapshots = snapshots

    def _key(self, session_id: str) -> str:
        return f"{MEMORY_PREFIX}{session_id}"

    async def load(self, session_id: str) -> Memory:
        raw = await self.client.get(self._key(session_id))
        if raw is None and self.snapshots is not None:
            raw = await self.snapshots.load_snapshot(session_id)
            if raw is not None:
                log.info("%s: memory restored from its snapshot (Redis had none)", session_id)
        if raw is None:
            return Memory()
        memory = Memory.model_validate_json(raw)
        if time.time() - memory.updated_at > self.window_s:
            return Memory()
        return memory

    async def save(self, session_id: str, memory: Memory) -> None:
        memory.updated_at = time.time()
        data = memory.model_dump_json()
        await self.client.set(self._key(session_id), data, ex=self.window_s)
        if self.snapshots is not None:
            await self.snapshots.save_snapshot(session_id, data.encode())

    async def sessions(self) -> AsyncIterator[str]:
        """Every session with memory in the shared store."""
        async for key in keys_with_prefix(self.client, MEMORY_PREFIX):
            yield key[len(MEMORY_PREFIX) :]


class BackupInfo(BaseModel):
    """One backup of a session's memory, as listed."""

    id: str
    made_at: datetime
    messages: int = Field(description="Messages it holds word for word.")


_INDEX = TypeAdapter(list[BackupInfo])


class MemoryBackup(BackupInfo):
    memory: Memory


class MemoryBackups:
    """A session's memory backups, kept `retention_s`.

    The index is one JSON value (the shared store has only get and set), written by the
    replica applying a clear under the session's lock."""

    def __init__(self, client: KeyValue, retention_s: int) -> None:
        self.client = client
        self.retention_s = retention_s

    async def keep(self, session_id: str, backup_id: str, memory: Memory) -> BackupInfo:
        backup = MemoryBackup(
            id=backup_id, made_at=datetime.now(UTC), messages=len(memory.messages), memory=memory
        )
        key = f"{BACKUP_PREFIX}{session_id}:{backup_id}"
        await self.client.set(key, backup.model_dump_json(), ex=self.retention_s)
        info = BackupInfo(id=backup.id, made_at=backup.made_at, messages=backup.messages)
        listed = [b for b in await self.index(session_id) if b.id != backup_id]
        listed = [info, *listed][:MAX_BACKUPS_LISTED]
        index = _INDEX.dump_json(listed)
        await self.client.set(f"{BACKUP_INDEX_PREFIX}{session_id}", index, ex=self.retention_s)
        return info

    async def get(self, session_id: str, backup_id: str) -> MemoryBackup | None:
        raw = await self.client.get(f"{BACKUP_PREFIX}{session_id}:{backup_id}")
        return None if raw is None else MemoryBackup.model_validate_json(raw)

    async def scrub(self, author: str) -> int:
        """Forget one viewer in every backup (a privacy request); how many changed."""
        changed = 0
        async for key in keys_with_prefix(self.client, BACKUP_PREFIX):
            raw = await self.client.get(key)
            if raw is None:
                continue
            backup = MemoryBackup.model_validate_json(raw)
            if backup.memory.scrub(author):
                await self.client.set(key, backup.model_dump_json(), ex=self.retention_s)
                changed += 1
        return changed

    async def index(self, session_id: str) -> list[BackupInfo]:
        """Newest first; those past the retention are left out (their keys have expired)."""
        raw = await self.client.get(f"{BACKUP_INDEX_PREFIX}{session_id}")
        if raw is None:
            return []
        oldest = time.time() - self.retention_s
        return [b for b in _INDEX.validate_json(raw) if b.made_at.timestamp() > oldest]


async def keys_with_prefix(client: KeyValue, prefix: str) -> AsyncIterator[str]:
    """Keys of the shared store that start with prefix (SCAN on Redis, a walk of the dict in
    the harness)."""
    scan = getattr(client, "scan_iter", None)
    if scan is not None:
        async for key in scan(match=f"{prefix}*", count=500):
            yield key.decode() if isinstance(key, bytes) else str(key)
        return
    for key in list(getattr(client, "values", {})):
        if key.startswith(prefix):
            yield key


async def claim_once(client: KeyValue, name: str, ttl_s: int) -> bool:
    """True for the first caller only: every policy replica reads every control message,
    and one of them must apply it.

    On Redis it is SET NX, atomic across replicas. The harness's store is a dict in one
    process, whose get and set never yield to another task in between."""
    if isinstance(client, Redis):
        return bool(await client.set(name, b"1", ex=ttl_s, nx=True))
    if await client.get(name) is not None:
        return False
    await client.set(name, b"1", ex=ttl_s)
    return True
