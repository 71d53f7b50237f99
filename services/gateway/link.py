"""BusLink: everything the gateway's routes reach the rest of Marionette through.

The routes never hold a Redis connection of their own: they publish typed messages through
the gateway stage's publishers (validated, traced, on the right partition) and watch
topics through a StreamTail.
"""

import uuid
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from contracts.envelope import Envelope
from contracts.topics import ALL_TOPICS, Topic
from services.bus.settings import BusSettings
from services.bus.stage import Bus
from services.gateway.personas import PersonaFiles
from services.gateway.security import RateLimiter
from services.gateway.settings import GatewaySettings
from services.gateway.tail import StreamTail
from services.gateway.turn_book import TurnBook

GLOBAL_SESSION = "control"
"""The session of control messages that concern the whole character (persona, panic)."""


def new_id(kind: str) -> str:
    """A fresh origin or turn id for something the gateway starts (`gw-chat-3f2a...`)."""
    return f"gw-{kind}-{uuid.uuid4().hex[:16]}"


@dataclass
class BusLink:
    settings: GatewaySettings
    bus_settings: BusSettings
    bus: Bus
    client: Redis
    tail: StreamTail = field(init=False)
    chat_limit: RateLimiter = field(init=False)
    dialogue_limit: RateLimiter = field(init=False)
    turns: TurnBook = field(init=False)
    personas: PersonaFiles = field(init=False)

    def __post_init__(self) -> None:
        self.tail = StreamTail(
            self.client, self.bus_settings.partitions, self.bus_settings.max_message_bytes
        )
        self.chat_limit = RateLimiter(self.settings.chat_per_minute)
        self.dialogue_limit = RateLimiter(self.settings.dialogue_per_minute)
        self.turns = TurnBook(self.tail)
        # Read once (policy's settings, the default persona file), not on every request.
        self.personas = PersonaFiles.from_settings(self.bus.store)

    async def publish(self, message: Envelope) -> dict[str, Any]:
        """Publish on the message's topic; what was published, as the API answers it."""
        topic = topic_of(message)
        entry = await self.bus.publisher(topic).publish(message)
        return {
            "topic": topic.name,
            "entry_id": entry.decode() if entry else None,
            "message": message.model_dump(mode="json"),
        }


def topic_of(message: Envelope) -> Topic[Any]:
    for topic in ALL_TOPICS:
        if type(message) is topic.model:
            return topic
    raise TypeError(f"no topic carries {type(message).__name__}")
