"""What the character remembers of a session: recent messages word for word, and a summary.

Kept in Redis, so a restarted (or another) replica picks the conversation up; memory
older than the window is not restored.
"""

import time

from pydantic import BaseModel, Field
from redis.asyncio import Redis


class Message(BaseModel):
    role: str  # "user" or "assistant"
    content: str


class Memory(BaseModel):
    summary: str = ""
    messages: list[Message] = Field(default_factory=list)
    since_summary: int = 0
    updated_at: float = 0.0

    def add(self, role: str, content: str) -> None:
        self.messages.append(Message(role=role, content=content))
        self.since_summary += 1

    def as_prompt(self) -> list[dict[str, str]]:
        return [m.model_dump() for m in self.messages]


class MemoryStore:
    def __init__(self, client: Redis, window_s: int) -> None:
        self.client = client
        self.window_s = window_s

    def _key(self, session_id: str) -> str:
        return f"marionette:policy:memory:{session_id}"

    async def load(self, session_id: str) -> Memory:
        raw = await self.client.get(self._key(session_id))
        if raw is None:
            return Memory()
        memory = Memory.model_validate_json(raw)
        if time.time() - memory.updated_at > self.window_s:
            return Memory()
        return memory

    async def save(self, session_id: str, memory: Memory) -> None:
        memory.updated_at = time.time()
        await self.client.set(self._key(session_id), memory.model_dump_json(), ex=self.window_s)
