"""What the character remembers of a session: recent messages word for word, and a summary.

Kept in Redis, so a restarted (or another) replica picks the conversation up; memory
older than the window is not restored.
"""

import time

from pydantic import BaseModel, Field

from services.bus.stage import KeyValue


class Message(BaseModel):
    role: str  # "user" or "assistant"
    content: str
    turn_id: str | None = None
    interrupted: bool = False  # the user talked over it: content is what they heard

    def for_prompt(self) -> dict[str, str]:
        # A dash, as in a script, tells the model the line was cut off there.
        content = f"{self.content}—" if self.interrupted else self.content
        return {"role": self.role, "content": content}


class Memory(BaseModel):
    summary: str = ""
    messages: list[Message] = Field(default_factory=list)
    since_summary: int = 0
    updated_at: float = 0.0

    def add(self, role: str, content: str, turn_id: str | None = None) -> None:
        self.messages.append(Message(role=role, content=content, turn_id=turn_id))
        self.since_summary += 1

    def remember(self, turn_id: str, said_to: str, reply: str) -> None:
        """A turn: what the user said and the reply, once (a turn redone after a crash
        is not remembered twice)."""
        if any(m.turn_id == turn_id for m in self.messages):
            return
        self.add("user", said_to, turn_id)
        self.add("assistant", reply, turn_id)

    def cut_short(self, turn_id: str, heard: str) -> bool:
        """Keep only what the user heard of the reply to `turn_id`; False if not found."""
        for message in reversed(self.messages):
            if message.role == "assistant" and message.turn_id == turn_id:
                message.content, message.interrupted = heard, True
                return True
        return False

    def as_prompt(self) -> list[dict[str, str]]:
        return [m.for_prompt() for m in self.messages]


class MemoryStore:
    def __init__(self, client: KeyValue, window_s: int) -> None:
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
