"""The policy stage against real backends on Redis: the embedded GGUF model and a real
llama.cpp server. (Its logic, with a scripted backend, is tested in memory:
tests/unit/test_policy_stage.py.)"""

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from contracts import ChatMessage, Control, PersonaChange, PolicyToken
from contracts.topics import CHAT_MESSAGE, CONTROL, POLICY_TOKEN
from services.bus import Bus, BusSettings, Producer, StageRuntime
from services.bus.redis_server import free_port
from services.models import prepare
from services.models.bundled import QWEN_05B
from services.policy.backends import ChatBackend, make_backend
from services.policy.settings import PolicySettings
from services.policy.stage import PolicyStage
from tests.helpers import read_topic, wait_until

pytestmark = pytest.mark.integration

DETERMINISTIC: dict[str, Any] = {"temperature": 0.0, "seed": 7, "max_tokens": 60}


def chat(text: str, turn: str, session: str = "s1", author: str = "viewer") -> ChatMessage:
    return ChatMessage(
        session_id=session, turn_id=turn, seq=0, platform="twitch", author=author, text=text
    )


async def replies(client: Redis, bus: BusSettings) -> dict[str, list[PolicyToken]]:
    by_turn: dict[str, list[PolicyToken]] = {}
    for token in await read_topic(client, POLICY_TOKEN, bus.partitions):
        assert isinstance(token, PolicyToken)
        by_turn.setdefault(token.turn_id or "", []).append(token)
    return by_turn


async def final_of(client: Redis, bus: BusSettings, turn: str) -> PolicyToken:
    async def done() -> bool:
        return any(t.final for t in (await replies(client, bus)).get(turn, []))

    await wait_until(done, timeout_s=180, what=f"the final token of {turn}")
    return next(t for t in (await replies(client, bus))[turn] if t.final)


class Conversation:
    """The policy stage running in this test, and a viewer talking to it."""

    def __init__(self, bus: BusSettings, client: Redis, viewer: Producer) -> None:
        self.bus = bus
        self.client = client
        self.viewer = viewer

    async def say(self, text: str, turn: str, session: str = "s1") -> PolicyToken:
        await self.viewer.publish(chat(text, turn, session))
        return await final_of(self.client, self.bus, turn)


def policy_runtime(
    bus_settings: BusSettings, settings: PolicySettings, backend: ChatBackend
) -> StageRuntime[PolicyStage]:
    async def build(bus: Bus) -> PolicyStage:
        await backend.check()
        return PolicyStage(settings, backend, bus)

    return StageRuntime(PolicyStage, bus_settings, build=build)


@pytest.fixture(scope="module")
async def embedded() -> ChatBackend:
    """The bundled Qwen 0.5B in this process, loaded once for the module."""
    backend = make_backend(PolicySettings(**DETERMINISTIC))
    await backend.check()
    return backend


@pytest.fixture
async def running_policy(
    bus_settings: BusSettings, embedded: ChatBackend
) -> AsyncIterator[StageRuntime[PolicyStage]]:
    settings = PolicySettings(**DETERMINISTIC)
    async with policy_runtime(bus_settings, settings, embedded) as runtime:
        yield runtime


@pytest.fixture
async def conversation(
    bus_settings: BusSettings, redis_client: Redis, running_policy: StageRuntime[PolicyStage]
) -> AsyncIterator[Conversation]:
    async with Producer(bus_settings, "viewer", [CHAT_MESSAGE, CONTROL]) as viewer:
        yield Conversation(bus_settings, redis_client, viewer)


async def test_tokens_arrive_in_order_and_end_with_the_whole_reply(
    conversation: Conversation, redis_client: Redis, bus_settings: BusSettings
) -> None:
    final = await conversation.say("Hi Mari! What is your favorite color?", "t1")
    tokens = (await replies(redis_client, bus_settings))["t1"]
    assert [t.index for t in tokens] == list(range(len(tokens)))
    assert [t.seq for t in tokens] == list(range(len(tokens)))
    assert tokens[-1] == final
    assert sum(t.final for t in tokens) == 1
    assert final.status == "ok"
    assert final.reply_text == "".join(t.text for t in tokens[:-1]).strip()
    assert len(tokens) - 1 >= 2, "the reply was streamed a clause at a time, not sent whole"
    assert "[" not in final.reply_text, "tags are not spoken"


async def test_persona_reaches_the_reply_and_a_control_message_switches_it(
    conversation: Conversation, running_policy: StageRuntime[PolicyStage]
) -> None:
    first = await conversation.say("What is your name?", "t1")
    assert "Mari" in (first.reply_text or "")
    await conversation.viewer.publish(
        Control(session_id="panel", seq=0, command=PersonaChange(persona="grumpy"))
    )
    personas = running_policy.stage.personas

    async def switched() -> bool:
        return personas.default.name == "Mari" and (await personas.current()).name == "Grum"

    await wait_until(switched, what="the persona switch")
    # Another session: this one's memory holds "My name is Mari", which a 0.5B model copies.
    second = await conversation.say("What is your name?", "t2", session="s2")
    assert "Grum" in (second.reply_text or "")


async def test_a_fact_told_earlier_is_used_later_even_after_a_restart(
    bus_settings: BusSettings, redis_client: Redis, embedded: ChatBackend
) -> None:
    settings = PolicySettings(**DETERMINISTIC)
    async with Producer(bus_settings, "viewer", [CHAT_MESSAGE]) as viewer:
        talk = Conversation(bus_settings, redis_client, viewer)
        async with policy_runtime(bus_settings, settings, embedded):
            await talk.say("Hi! My cat is called Pickles. Please remember that.", "t1")
        # The stage restarts: a new stage, nothing in this process's memory.
        async with policy_runtime(bus_settings, settings, embedded):
            answer = await talk.say("What is the name of my cat?", "t2")
    assert "Pickles" in (answer.reply_text or ""), answer.reply_text


async def test_tags_in_the_model_output_become_expression_fields(
    conversation: Conversation,
) -> None:
    finals = [
        await conversation.say(text, f"t{n}")
        for n, text in enumerate(
            ["Hi Mari!", "I just beat the final boss!", "My dog is sick today."]
        )
    ]
    assert all("[" not in (f.reply_text or "") for f in finals)
    assert any(f.expressions for f in finals), [f.reply_text for f in finals]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """A real llama.cpp server (llama-cpp-python's OpenAI-compatible server)."""
    port = free_port()
    model = prepare(QWEN_05B, show_progress=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias",
         "qwen", "--host", "127.0.0.1", "--port", str(port), "--n_threads", "2",
         "--n_ctx", "2048"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError("llama_cpp.server exited at start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


async def test_openai_compatible_backend_streams_from_a_llama_cpp_server(
    llama_server: str, bus_settings: BusSettings, redis_client: Redis
) -> None:
    # No tools: llama-cpp-python's server, given some, answers through its function-calling
    # format and no longer streams a plain reply (tool calls over this wire:
    # tests/integration/test_policy_tool_backends.py).
    settings = PolicySettings(
        backend="openai", base_url=llama_server, model="qwen", tools=[], **DETERMINISTIC
    )
    async with (
        policy_runtime(bus_settings, settings, make_backend(settings)),
        Producer(bus_settings, "viewer", [CHAT_MESSAGE]) as viewer,
    ):
        final = await Conversation(bus_settings, redis_client, viewer).say(
            "Hi Mari! How are you?", "t1"
        )
    tokens = (await replies(redis_client, bus_settings))["t1"]
    assert final.status == "ok"
    assert final.reply_text
    assert len(tokens) > 3
