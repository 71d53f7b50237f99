"""The gateway's control API and live events, on real uvicorn and a real Redis, with real
clients (httpx, websockets): what each call puts on the bus, resuming events, and every
way a request is refused."""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from contracts import ChatMessage, Control, PolicyToken
from contracts.topics import CHAT_MESSAGE, CONTROL, POLICY_TOKEN
from services.bus import BusSettings
from services.bus.redis_server import free_port
from services.errors import ConfigError
from services.gateway.settings import GatewaySettings
from services.settings import load_settings
from tests.helpers import read_topic
from tests.integration.gateway_fixtures import (
    OPERATOR_KEY,
    READ_KEY,
    RunningGateway,
    running_gateway,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def keyed_gateway(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningGateway]:
    env = {
        "MARIONETTE_GATEWAY_OPERATOR_KEY": OPERATOR_KEY,
        "MARIONETTE_GATEWAY_READ_KEY": READ_KEY,
        "MARIONETTE_GATEWAY_CHAT_PER_MINUTE": "4",
        "MARIONETTE_GATEWAY_CORS_ORIGINS": '["https://panel.example"]',
    }
    async with running_gateway(bus_settings, monkeypatch, env) as running:
        yield running


async def controls(client: Redis, bus: BusSettings) -> list[Any]:
    return [m.command for m in await read_topic(client, CONTROL, bus.partitions)
            if isinstance(m, Control)]  # fmt: skip


# --- what each call publishes -------------------------------------------------------------


async def test_each_control_call_publishes_one_typed_message_and_answers_with_it(
    gateway: RunningGateway, redis_client: Redis, bus_settings: BusSettings
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        toggled = await http.post("/api/modules/tts", json={"enabled": False})
        panicked = await http.post("/api/panic", json={})
        persona = await http.post(
            "/api/persona", json={"persona": "grumpy", "edits": {"energy": 0.9}}
        )
        stopped = await http.post("/api/interrupt", json={"session": "s1", "turn_id": "t-7"})
    assert [r.status_code for r in (toggled, panicked, persona, stopped)] == [200] * 4
    published = await controls(redis_client, bus_settings)
    assert [c.kind for c in published] == ["module", "panic", "persona", "interrupt"]
    assert published[0].module == "tts"
    assert published[0].enabled is False
    assert published[1].engaged is True
    assert published[2].persona == "grumpy"
    assert published[2].edits == {"energy": 0.9}
    assert published[3].target_turn_id == "t-7"
    # Each answer is what went out, entry id included.
    assert toggled.json()["message"]["command"] == {
        "kind": "module",
        "module": "tts",
        "enabled": False,
    }
    assert toggled.json()["entry_id"]
    assert persona.json()["persona"]["name"] == "Grum"
    assert persona.json()["persona"]["energy"] == 0.9


async def test_chat_opens_a_turn_and_say_speaks_as_the_character(
    gateway: RunningGateway, redis_client: Redis, bus_settings: BusSettings
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        chat = await http.post("/api/chat", json={"text": "what game is this?", "author": "mod",
                                                 "session": "s2"})  # fmt: skip
        said = await http.post("/api/say", json={"text": "Be right back!", "session": "s2",
                                                 "expression": "happy"})  # fmt: skip
    assert chat.status_code == 200
    assert said.status_code == 200
    chats = [m for m in await read_topic(redis_client, CHAT_MESSAGE, bus_settings.partitions)
             if isinstance(m, ChatMessage)]  # fmt: skip
    assert [(c.session_id, c.turn_id, c.author, c.text) for c in chats] == [
        ("s2", chat.json()["turn_id"], "mod", "what game is this?")
    ]
    tokens = [m for m in await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)
              if isinstance(m, PolicyToken)]  # fmt: skip
    assert {t.turn_id for t in tokens} == {said.json()["turn_id"]}
    assert tokens[-1].final
    assert tokens[-1].status == "ok"
    assert tokens[-1].reply_text == "Be right back!"
    assert tokens[-1].expressions == ["happy"]
    assert tokens[0].expressions == ["happy"]
    assert "".join(t.text for t in tokens) == "Be right back!"


async def test_interrupt_without_a_turn_stops_the_sessions_current_reply(
    gateway: RunningGateway, redis_client: Redis, bus_settings: BusSettings
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        nothing = await http.post("/api/interrupt", json={"session": "quiet"})
        said = await http.post("/api/say", json={"text": "A long story.", "session": "s3"})
        stopped = await http.post("/api/interrupt", json={"session": "s3"})
    assert nothing.status_code == 409
    assert "no reply in progress" in nothing.json()["error"]
    assert stopped.status_code == 200
    assert stopped.json()["message"]["command"]["target_turn_id"] == said.json()["turn_id"]


# --- live events ----------------------------------------------------------------------------


async def next_event(ws: Any) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))


async def test_events_stream_the_chosen_topics_and_resume_where_a_client_left(
    gateway: RunningGateway,
) -> None:
    query = "/ws/events?topics=chat.message&session=fans"
    async with httpx.AsyncClient(base_url=gateway.url) as http:

        async def say(text: str, session: str = "fans") -> None:
            answer = await http.post("/api/chat", json={"text": text, "session": session})
            assert answer.status_code == 200, answer.text

        async with websockets.connect(gateway.ws + query) as ws:
            assert (await next_event(ws))["ready"] is True
            await say("one")
            await say("elsewhere", session="other")  # another session: not sent
            await say("two")
            first = await next_event(ws)
            assert first["topic"] == "chat.message"
            assert first["message"]["text"] == "one"
        # Gone for a while: three lines come and go meanwhile.
        for text in ("three", "four", "five"):
            await say(text)
        async with websockets.connect(f"{gateway.ws}{query}&since={first['position']}") as ws:
            assert (await next_event(ws))["ready"] is True
            texts = [(await next_event(ws))["message"]["text"] for _ in range(4)]
    assert texts == ["two", "three", "four", "five"]


async def test_events_leave_audio_out_unless_asked(gateway: RunningGateway) -> None:
    async with websockets.connect(gateway.ws + "/ws/events?topics=audio.frame") as ws:
        refused = await next_event(ws)
    assert refused["fields"][0]["field"] == "query.topics"
    assert "audio=1" in refused["error"]
    async with websockets.connect(gateway.ws + "/ws/events?topics=chat.nothing") as ws:
        unknown = await next_event(ws)
    assert "unknown topic 'chat.nothing'" in unknown["error"]
    async with websockets.connect(gateway.ws + "/ws/events?since=yesterday") as ws:
        assert (await next_event(ws))["fields"][0]["field"] == "query.since"


# --- refusals ---------------------------------------------------------------------------------


async def test_a_bad_request_names_the_field_and_reaches_nothing(
    gateway: RunningGateway, redis_client: Redis, bus_settings: BusSettings
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        missing = await http.post("/api/chat", json={"author": "x"})
        extra = await http.post("/api/chat", json={"text": "hi", "colour": "red"})
        bad_session = await http.post("/api/chat", json={"text": "hi", "session": "a b"})
        bad_edit = await http.post("/api/persona", json={"edits": {"chaos": 7}})
        no_persona = await http.post("/api/persona", json={"persona": "nobody"})
        no_module = await http.post("/api/modules/kazoo", json={"enabled": True})
        not_json = await http.post(
            "/api/chat", content=b"{", headers={"content-type": "application/json"}
        )
        too_big = await http.post("/api/chat", json={"text": "x" * 70_000})
    assert missing.status_code == 422
    assert missing.json()["fields"][0]["field"] == "body.text"
    assert extra.status_code == 422
    assert extra.json()["fields"][0]["field"] == "body.colour"
    assert bad_session.status_code == 422
    assert bad_session.json()["fields"][0]["field"] == "body.session"
    assert bad_edit.status_code == 422
    assert bad_edit.json()["fields"][0]["field"] == "body.edits.chaos"
    assert no_persona.status_code == 404
    assert "grumpy" in no_persona.json()["error"]
    assert no_module.status_code == 404
    assert "tts" in no_module.json()["error"]
    assert not_json.status_code == 422
    assert too_big.status_code == 413
    assert "MARIONETTE_GATEWAY_MAX_BODY_BYTES" in too_big.json()["error"]
    assert await read_topic(redis_client, CHAT_MESSAGE, bus_settings.partitions) == []
    assert await controls(redis_client, bus_settings) == []


async def test_keys_decide_who_may_read_and_who_may_operate(keyed_gateway: RunningGateway) -> None:
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    reader = {"Authorization": f"Bearer {READ_KEY}"}
    async with httpx.AsyncClient(base_url=keyed_gateway.url) as http:
        anonymous = await http.get("/api/status")
        wrong = await http.get(
            "/api/status", headers={"Authorization": "Bearer not-the-key-at-all"}
        )
        read = await http.get("/api/status", headers=reader)
        read_by_query = await http.get(f"/api/status?key={READ_KEY}")
        reader_posts = await http.post("/api/panic", json={}, headers=reader)
        operator_posts = await http.post("/api/panic", json={"engaged": False}, headers=operator)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "a key is required" in anonymous.json()["error"]
    assert wrong.status_code == 401
    assert "not valid" in wrong.json()["error"]
    assert read.status_code == 200
    assert read_by_query.status_code == 200
    assert reader_posts.status_code == 403
    assert "operator key" in reader_posts.json()["error"]
    assert operator_posts.status_code == 200
    # WebSockets: a key by query (what an OBS browser source can do), refused without one.
    async with websockets.connect(f"{keyed_gateway.ws}/ws/events?key={READ_KEY}") as ws:
        assert (await next_event(ws))["ready"] is True
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{keyed_gateway.ws}/ws/events"):
            pass
    assert refused.value.response.status_code == 403


async def test_pages_from_other_origins_are_kept_out(keyed_gateway: RunningGateway) -> None:
    key = f"key={READ_KEY}"
    events = f"{keyed_gateway.ws}/ws/events?{key}"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(events, origin=websockets.Origin("https://evil.example")):
            pass
    async with websockets.connect(events, origin=websockets.Origin("https://panel.example")) as ws:
        assert (await next_event(ws))["ready"] is True
    async with httpx.AsyncClient(base_url=keyed_gateway.url) as http:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = await http.options(
            "/api/chat", headers={**preflight, "Origin": "https://panel.example"}
        )
        other = await http.options(
            "/api/chat", headers={**preflight, "Origin": "https://evil.example"}
        )
    assert allowed.headers.get("access-control-allow-origin") == "https://panel.example"
    assert "access-control-allow-origin" not in other.headers


async def test_chat_is_rate_limited_per_client(keyed_gateway: RunningGateway) -> None:
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    async with httpx.AsyncClient(base_url=keyed_gateway.url, headers=operator) as http:
        answers = [await http.post("/api/chat", json={"text": f"line {n}"}) for n in range(3)]
    # 4 a minute: a burst of one, then one every 15 s.
    assert answers[0].status_code == 200
    limited = answers[1]
    assert limited.status_code == 429, [a.status_code for a in answers]
    assert int(limited.headers["retry-after"]) >= 1
    assert "too many chat requests" in limited.json()["error"]


def test_listening_beyond_loopback_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARIONETTE_GATEWAY_HOST", "0.0.0.0")
    with pytest.raises(ConfigError, match="MARIONETTE_GATEWAY_OPERATOR_KEY"):
        load_settings(GatewaySettings)
    monkeypatch.setenv("MARIONETTE_GATEWAY_OPERATOR_KEY", "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_settings(GatewaySettings)
    monkeypatch.setenv("MARIONETTE_GATEWAY_OPERATOR_KEY", OPERATOR_KEY)
    assert load_settings(GatewaySettings).keyed


async def test_two_gateways_share_one_port(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch, redis_client: Redis
) -> None:
    """Replicas on one machine (`up --scale gateway=2`) listen on the same port."""
    port = free_port()
    env = {
        "MARIONETTE_GATEWAY_PORT": str(port),
        "MARIONETTE_GATEWAY_SHARE_PORT": "1",
        "MARIONETTE_GATEWAY_CHAT_PER_MINUTE": "600",
    }
    async with (
        running_gateway(bus_settings, monkeypatch, env, replica_id="gateway-1") as first,
        running_gateway(bus_settings, monkeypatch, env, replica_id="gateway-2") as second,
    ):
        assert first.url == second.url == f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=first.url) as http:
            for n in range(10):
                answer = await http.post("/api/chat", json={"text": f"line {n}"})
                assert answer.status_code == 200
            status = (await http.get("/api/status")).json()
    replicas = {r["replica"] for r in status["stages"]["gateway"]["replicas"] if r["alive"]}
    assert replicas == {"gateway-1", "gateway-2"}
    chats = await read_topic(redis_client, CHAT_MESSAGE, bus_settings.partitions)
    assert len(chats) == 10


def test_a_port_in_use_is_an_error_naming_the_setting(
    gateway: RunningGateway, bus_settings: BusSettings
) -> None:
    """Without share_port a second Marionette never answers on the first one's port: the
    stage stops at once, saying which setting to change."""
    port = gateway.url.rsplit(":", 1)[1]
    env = {**os.environ, "REDIS_URL": bus_settings.redis_url or "",
           "MARIONETTE_GATEWAY_PORT": port, "MARIONETTE_METRICS_PORT": "0"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "services", "run", "gateway"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MARIONETTE_GATEWAY_PORT" in result.stderr + result.stdout
