"""NPC dialogue over SSE and the memory API, through a real gateway (uvicorn) on Redis,
with policy running the bundled LLM (and tts speaking Piper for the audio case).

The stages run once for the module (the LLM loads once); the NPCs are two persona files
in a temporary personas_dir. Gateways for the error cases (policy not running, timeout,
rate limit) run on another Redis database, where no policy runs."""

import asyncio
import base64
import io
import json
import time
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from contracts import Control, Interrupt, PolicyToken
from contracts.limits import TTS_SAMPLE_RATES
from contracts.topics import CHAT_MESSAGE, CONTROL, POLICY_TOKEN
from services.bus import BusSettings, StageRuntime, load_bus_settings
from services.bus.ownership import lease_key
from services.bus.partitions import partition_of
from services.gateway.stage import GatewayStage
from services.policy.stage import PolicyStage
from services.tts.stage import TtsStage
from tests.helpers import read_topic, wait_until

pytestmark = pytest.mark.integration

PERSONAS = {
    "pirate": """name = "Captain Barnacle"
description = "a cheerful pirate captain who sails the sea on his ship, the Salty Gull."
style = "chaotic"
energy = 0.8
expressions = ["neutral", "happy", "sad"]

[[examples]]
user = "Who are you?"
assistant = "[happy] Arr, I am Captain Barnacle of the Salty Gull! The sea is my home."
""",
    "robot": """name = "Zorblax"
description = "a polite robot butler who polishes silver in a castle."
style = "calm"
energy = 0.2
expressions = ["neutral", "happy", "sad"]

[[examples]]
user = "Who are you?"
assistant = "[neutral] Greetings, I am Zorblax, the robot butler. I polish the silver."
""",
}
QUESTION = "Hello! Who are you, and what do you do all day?"


@dataclass
class Received:
    event: str
    data: dict[str, Any]
    at: float  # time.time() when it arrived


@dataclass
class Stack:
    url: str
    bus: BusSettings
    client: Redis
    policy: StageRuntime[PolicyStage]


async def read_events(response: httpx.Response) -> list[Received]:
    """An SSE body as its events (comments, such as pings, left out)."""
    events: list[Received] = []
    name, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                events.append(Received(name, json.loads("\n".join(data)), time.time()))
            name, data = "message", list[str]()
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
    return events


async def talk(url: str, **body: Any) -> tuple[httpx.Response, list[Received]]:
    async with (
        httpx.AsyncClient(timeout=300) as client,
        client.stream("POST", f"{url}/api/dialogue/stream", json=body) as response,
    ):
        if response.status_code != 200:
            await response.aread()
            return response, []
        return response, await read_events(response)


async def serving(runtime: StageRuntime[GatewayStage]) -> str:
    await runtime.stage.listening.wait()
    return runtime.stage.url


@pytest.fixture(scope="module")
def personas_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("npcs")
    for name, text in PERSONAS.items():
        (folder / f"{name}.toml").write_text(text)
    return folder


@pytest.fixture(scope="module")
def environment(personas_dir: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MARIONETTE_GATEWAY_PORT", "0")
        env.setenv("MARIONETTE_GATEWAY_DIALOGUE_TIMEOUT_S", "240")
        env.setenv("MARIONETTE_POLICY_PERSONAS_DIR", str(personas_dir))
        env.setenv("MARIONETTE_POLICY_MAX_TOKENS", "40")
        env.setenv("MARIONETTE_POLICY_TEMPERATURE", "0")
        env.setenv("MARIONETTE_POLICY_SEED", "7")
        env.setenv("MARIONETTE_TTS_VARIATION", "0")
        yield


@pytest.fixture(scope="module")
async def stack(redis_server_url: str, environment: None) -> AsyncIterator[Stack]:
    """policy (the bundled LLM) and a gateway, on a Redis emptied once for the module."""
    client: Redis = Redis.from_url(redis_server_url)
    await client.flushdb()
    bus = load_bus_settings(
        redis_url=redis_server_url, lease_ms=900, partitions=4, retry_backoff_ms=20
    )
    async with StageRuntime(PolicyStage, bus) as policy, StageRuntime(GatewayStage, bus) as gateway:
        yield Stack(await serving(gateway), bus, client, policy)
    await client.aclose()


@dataclass
class Conversations:
    """The two NPCs' answers to alice, asked at the same time."""

    pirate: list[Received]
    robot: list[Received]
    turns: dict[str, str]  # npc -> turn id


@pytest.fixture(scope="module")
async def conversations(stack: Stack) -> Conversations:
    (pirate_response, pirate), (robot_response, robot) = await asyncio.gather(
        talk(stack.url, npc="pirate", player="alice", text=QUESTION),
        talk(stack.url, npc="robot", player="alice", text=QUESTION),
    )
    for response in (pirate_response, robot_response):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
    turns = {
        "pirate": pirate_response.headers["x-marionette-turn"],
        "robot": robot_response.headers["x-marionette-turn"],
    }
    return Conversations(pirate, robot, turns)


def final_of(events: list[Received]) -> dict[str, Any]:
    assert events, "no event"
    assert events[-1].event == "final", [(e.event, e.data) for e in events]
    return events[-1].data


def sentences_of(events: list[Received]) -> list[Received]:
    return [e for e in events if e.event == "sentence"]


# --- dialogue ---------------------------------------------------------------------------


async def test_two_npcs_answer_at_once_each_as_its_own_persona(
    conversations: Conversations,
) -> None:
    pirate, robot = final_of(conversations.pirate), final_of(conversations.robot)
    assert (pirate["status"], robot["status"]) == ("ok", "ok")
    assert (pirate["session"], robot["session"]) == ("pirate:alice", "robot:alice")
    # Each persona's own words (the 0.5B model may take the player's name for its own).
    assert "Salty Gull" in pirate["text"], pirate["text"]
    assert "Zorblax" in robot["text"], robot["text"]
    assert "Zorblax" not in pirate["text"], pirate["text"]
    assert "Salty Gull" not in robot["text"], robot["text"]


async def test_sentences_come_as_they_are_ready_and_add_up_to_the_reply(
    conversations: Conversations, stack: Stack
) -> None:
    tokens = [t for t in await read_topic(stack.client, POLICY_TOKEN, stack.bus.partitions)]
    for npc, events in (("pirate", conversations.pirate), ("robot", conversations.robot)):
        final = final_of(events)
        sentences = sentences_of(events)
        assert [e.data["index"] for e in sentences] == list(range(len(sentences)))
        assert len(sentences) == final["sentences"] >= 2, final["text"]
        assert " ".join(e.data["text"] for e in sentences) == " ".join(final["text"].split())
        assert all("[" not in e.data["text"] for e in sentences), "no emotion tags"
        assert all("audio" not in e.data for e in sentences)
        latencies = [e.data["latency_ms"] for e in sentences]
        assert latencies == sorted(latencies)
        assert final["first_sentence_ms"] == latencies[0] <= final["total_ms"]
        (last_token,) = [
            t for t in tokens
            if isinstance(t, PolicyToken) and t.turn_id == conversations.turns[npc] and t.final
        ]  # fmt: skip
        # The first sentence reached the client while the LLM was still writing the reply.
        assert sentences[0].at < last_token.created_at.timestamp(), npc


async def test_each_npc_remembers_its_own_conversation_with_the_player(
    conversations: Conversations, stack: Stack
) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        for npc, events in (("pirate", conversations.pirate), ("robot", conversations.robot)):
            memory = (await client.get(f"/api/sessions/{npc}:alice/memory")).json()
            said = [(m["role"], m["content"]) for m in memory["messages"]]
            assert said == [
                ("user", f"alice (in chat): «{QUESTION}»"),
                ("assistant", final_of(events)["text"]),
            ]
        live = (await client.get("/api/sessions/local/memory")).json()
        assert live["messages"] == [], "the live character heard none of it"


async def test_an_unknown_npc_is_404_naming_the_npcs_there_are(stack: Stack) -> None:
    response, _ = await talk(stack.url, npc="dragon", player="alice", text="hi")
    assert response.status_code == 404
    body = response.json()
    assert body["fields"][0]["field"] == "body.npc"
    assert "pirate" in body["error"]
    assert "robot" in body["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"npc": "pirate", "player": "alice"}, "body.text"),
        ({"npc": "pirate", "player": "al:ice", "text": "hi"}, "body.player"),
        ({"npc": "../etc", "player": "alice", "text": "hi"}, "body.npc"),
        ({"npc": "pirate", "player": "alice", "text": "hi", "voice": "x"}, "body.voice"),
    ],
)
async def test_a_bad_request_is_422_naming_the_field(
    stack: Stack, body: dict[str, Any], field: str
) -> None:
    response, _ = await talk(stack.url, **body)
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == [field]


async def test_the_openapi_document_describes_the_event_stream(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        document = (await client.get("/api/openapi.json")).json()
    answer = document["paths"]["/api/dialogue/stream"]["post"]["responses"]["200"]
    assert list(answer["content"]) == ["text/event-stream"]
    assert {"sentence", "final", "error"} <= set(
        answer["content"]["text/event-stream"]["schema"]["x-events"]
    )


async def test_with_audio_each_sentence_carries_a_wav(stack: Stack) -> None:
    # tts reads only what comes from now on: the replies above need no speech.
    tts_bus = stack.bus.model_copy(update={"group_start": "$"})
    async with StageRuntime(TtsStage, tts_bus):
        response, events = await talk(
            stack.url, npc="robot", player="bob", text="Hi! Who are you?", audio=True
        )
    assert response.status_code == 200
    final = final_of(events)
    sentences = sentences_of(events)
    assert final["status"] == "ok"
    assert sentences
    assert " ".join(e.data["text"] for e in sentences) == " ".join(final["text"].split())
    for sentence in sentences:
        with wave.open(io.BytesIO(base64.b64decode(sentence.data["audio"]))) as wav:
            assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
            assert wav.getframerate() in TTS_SAMPLE_RATES
            assert wav.getnframes() > wav.getframerate() // 10, "at least 0.1 s of speech"


async def test_a_client_that_goes_away_interrupts_the_turn(stack: Stack) -> None:
    body = {"npc": "pirate", "player": "carol", "text": "Tell me a long story about the sea."}
    async with (
        httpx.AsyncClient(timeout=300) as client,
        client.stream("POST", f"{stack.url}/api/dialogue/stream", json=body) as response,
    ):
        turn = response.headers["x-marionette-turn"]
        async for line in response.aiter_lines():
            if line.startswith("event: sentence"):
                break  # and hang up

    async def interrupted() -> bool:
        return any(
            isinstance(m, Control) and isinstance(m.command, Interrupt)
            and (m.command.target_turn_id, m.command.reason) == (turn, "client_gone")
            for m in await read_topic(stack.client, CONTROL, stack.bus.partitions)
        )  # fmt: skip

    await wait_until(interrupted, what="the interrupt of the abandoned turn")


# --- memory -----------------------------------------------------------------------------


async def test_memory_is_cleared_with_a_backup_restored_and_exported(
    conversations: Conversations, stack: Stack
) -> None:
    path = "/api/sessions/pirate:alice/memory"
    async with httpx.AsyncClient(base_url=stack.url) as client:

        async def messages() -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = (await client.get(path)).json()["messages"]
            return result

        before = await messages()
        assert len(before) == 2

        cleared = await client.delete(path)
        assert cleared.status_code == 200
        backup_id = cleared.json()["backup_id"]
        command = cleared.json()["published"]["message"]["command"]
        assert command == {"kind": "memory_clear", "backup_id": backup_id}

        async def empty() -> bool:
            return await messages() == []

        await wait_until(empty, what="the memory cleared")
        backups = (await client.get(f"{path}/backups")).json()
        assert [(b["id"], b["messages"]) for b in backups] == [(backup_id, 2)]
        assert backups[0]["made_at"]

        missing = await client.post(f"{path}/restore", json={"backup_id": "no-such-backup"})
        assert missing.status_code == 404
        assert missing.json()["fields"][0]["field"] == "body.backup_id"
        extra = await client.post(f"{path}/restore", json={"backup_id": backup_id, "x": 1})
        assert extra.status_code == 422

        restored = await client.post(f"{path}/restore", json={"backup_id": backup_id})
        assert restored.status_code == 200

        async def back() -> bool:
            return await messages() == before

        await wait_until(back, what="the memory restored")

        export = await client.get(f"{path}/export")
        assert export.status_code == 200
        assert export.headers["content-disposition"].startswith("attachment;")
        assert ".json" in export.headers["content-disposition"]
        exported = export.json()
        assert exported["session"] == "pirate:alice"
        assert exported["memory"]["messages"] == before


# --- when nothing answers, and limits: gateways on a Redis database without stages -------


@dataclass
class Bare:
    client: Redis
    bus: BusSettings

    def gateway(self) -> StageRuntime[GatewayStage]:
        """A gateway started now (it reads its settings from the environment at start)."""
        return StageRuntime(GatewayStage, self.bus)


@pytest.fixture
async def bare(redis_server_url: str, environment: None) -> AsyncIterator[Bare]:
    url = redis_server_url.rsplit("/", 1)[0] + "/1"
    client: Redis = Redis.from_url(url)
    await client.flushdb()
    yield Bare(client, load_bus_settings(redis_url=url, lease_ms=900, partitions=4))
    await client.aclose()


async def test_without_policy_the_stream_is_one_error_and_nothing_is_asked(bare: Bare) -> None:
    async with bare.gateway() as gateway:
        response, events = await talk(await serving(gateway), npc="pirate", player="a", text="hi")
    assert response.status_code == 200
    assert [(e.event, e.data["code"]) for e in events] == [("error", "policy_not_running")]
    assert await read_topic(bare.client, CHAT_MESSAGE, bare.bus.partitions) == []


async def test_a_reply_not_done_in_time_is_an_error_and_the_turn_is_interrupted(
    bare: Bare, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARIONETTE_GATEWAY_DIALOGUE_TIMEOUT_S", "1")
    # policy "holds" the session's partition, but nothing answers.
    partition = partition_of("pirate:alice", bare.bus.partitions)
    await bare.client.set(lease_key("policy", partition), "nobody#1.0", px=60_000)
    async with bare.gateway() as gateway:
        started = time.monotonic()
        response, events = await talk(
            await serving(gateway), npc="pirate", player="alice", text="hi"
        )
        took = time.monotonic() - started
    assert 1 <= took < 10
    assert [(e.event, e.data["code"]) for e in events] == [("error", "timeout")]
    assert len(await read_topic(bare.client, CHAT_MESSAGE, bare.bus.partitions)) == 1
    interrupts = [
        m.command for m in await read_topic(bare.client, CONTROL, bare.bus.partitions)
        if isinstance(m, Control) and isinstance(m.command, Interrupt)
    ]  # fmt: skip
    turn = response.headers["x-marionette-turn"]
    assert [(i.target_turn_id, i.reason) for i in interrupts] == [(turn, "timeout")]


async def test_too_many_dialogue_requests_are_429_with_retry_after(
    bare: Bare, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARIONETTE_GATEWAY_DIALOGUE_PER_MINUTE", "2")  # a burst of one
    async with bare.gateway() as gateway:
        url = await serving(gateway)
        first, _ = await talk(url, npc="dragon", player="alice", text="hi")  # 404, counted
        second, _ = await talk(url, npc="dragon", player="alice", text="hi")
    assert first.status_code == 404
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1
    assert "too many dialogue requests" in second.json()["error"]
