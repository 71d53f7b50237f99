"""Tools and long-term memory with the bundled model, on Redis: the embedded Qwen 0.5B
writes the arguments of the tool the gate chose (routed tool calling), the call and result
go out on tool.event, and a fact told in one session is recalled in another."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts.tools import ToolEvent
from contracts.topics import CHAT_MESSAGE, TOOL_EVENT
from services.bus import Bus, BusSettings, Producer, StageRuntime
from services.memory.long_term import open_long_term
from services.memory.settings import MemorySettings
from services.policy.backends import ChatBackend, make_backend
from services.policy.settings import PolicySettings
from services.policy.stage import PolicyStage
from services.policy.tools.builtin import BUILTIN_TOOLS
from services.policy.tools.gate import ToolGate
from tests.helpers import read_topic
from tests.integration.test_think import DETERMINISTIC, Conversation

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def embedded() -> ChatBackend:
    """The bundled Qwen 0.5B in this process, loaded once for the module."""
    backend = make_backend(PolicySettings(**DETERMINISTIC))
    await backend.check()
    return backend


@pytest.fixture
async def conversation(
    bus_settings: BusSettings, redis_client: Redis, embedded: ChatBackend, tmp_path: Path
) -> AsyncIterator[Conversation]:
    settings = PolicySettings(**DETERMINISTIC)
    long_term = open_long_term(MemorySettings(path=tmp_path / "memory.sqlite3"))
    gate = ToolGate(long_term.embedder, BUILTIN_TOOLS)

    async def build(bus: Bus) -> PolicyStage:
        return PolicyStage(settings, embedded, bus, long_term, gate)

    async with (
        StageRuntime(PolicyStage, bus_settings, build=build),
        Producer(bus_settings, "viewer", [CHAT_MESSAGE]) as viewer,
    ):
        yield Conversation(bus_settings, redis_client, viewer)


async def test_the_bundled_model_rolls_the_die_it_was_asked_for(
    conversation: Conversation, redis_client: Redis, bus_settings: BusSettings
) -> None:
    final = await conversation.say("roll a d20 for me", "t1")
    events = [e for e in await read_topic(redis_client, TOOL_EVENT, bus_settings.partitions)]
    assert all(isinstance(e, ToolEvent) for e in events)
    call, result = events
    assert (call.tool, call.phase, call.arguments.get("sides")) == ("dice", "call", 20)
    assert result.outcome == "ok"
    assert result.result.startswith("Rolled a d20: ")
    assert final.status == "ok"
    assert final.reply_text


async def test_chit_chat_calls_no_tool(
    conversation: Conversation, redis_client: Redis, bus_settings: BusSettings
) -> None:
    final = await conversation.say("how are you today?", "t1")
    assert final.status == "ok"
    assert await read_topic(redis_client, TOOL_EVENT, bus_settings.partitions) == []


async def test_a_fact_from_monday_is_known_on_friday(conversation: Conversation) -> None:
    await conversation.say("my dog is called Pepper", "t1", session="monday")
    final = await conversation.say("what's my dog's name again?", "t2", session="friday")
    assert "pepper" in (final.reply_text or "").lower()
