"""Redis with a user per stage (services.bus.acl, as deploy/docker-compose.yml runs it):
the bus works through those users, and the gateway's user cannot wipe or reconfigure the
server."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import websockets

from contracts import ChatMessage, PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import Publishes, Stage, StageRuntime, consumes, load_bus_settings
from services.bus.acl import USERS, acl_file, new_passwords
from services.bus.redis_server import EmbeddedRedis
from tests.integration.gateway_fixtures import running_gateway

pytestmark = pytest.mark.timeout(60)


class Answerer(Stage):
    """Answers each chat line with one final token: a stage doing what policy does on
    the bus (a partition lease, a fenced write, an acknowledgement, heartbeats)."""

    name = "policy"
    tokens = Publishes(POLICY_TOKEN)

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, chat: ChatMessage) -> None:
        reply = f"you said {chat.text}"
        await self.tokens.publish(
            PolicyToken(session_id=chat.session_id, turn_id=chat.turn_id, seq=0, text="",
                        index=0, final=True, reply_text=reply, status="ok")
        )  # fmt: skip


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    passwords = new_passwords()
    acl = tmp_path_factory.mktemp("acl") / "users.acl"
    acl.write_text(acl_file(passwords))
    with EmbeddedRedis(extra_args=["--aclfile", str(acl)]) as server:
        yield server.url, passwords


def url_of(base: str, user: str, password: str) -> str:
    return base.replace("redis://", f"redis://{user}:{password}@")


async def test_stages_and_the_gateway_work_each_as_their_own_user(
    acl_redis: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, passwords = acl_redis
    gateway_bus = load_bus_settings(redis_url=url_of(base, "gateway", passwords["gateway"]))
    policy_bus = load_bus_settings(redis_url=url_of(base, "policy", passwords["policy"]))
    async with (
        StageRuntime(Answerer, policy_bus),
        running_gateway(gateway_bus, monkeypatch) as gateway,
    ):
        query = "/ws/events?topics=policy.token&session=fans"
        async with websockets.connect(gateway.ws + query) as ws, httpx.AsyncClient() as http:
            assert json.loads(await ws.recv())["ready"]
            sent = await http.post(
                f"{gateway.url}/api/chat", json={"text": "hi", "session": "fans"}
            )
            assert sent.status_code == 200, sent.text
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            status = await http.get(f"{gateway.url}/api/status")
    assert event["message"]["reply_text"] == "you said hi"
    assert status.status_code == 200, status.text
    assert status.json()["stages"]["policy"]["topics"]["chat.message"]["pending"] == 0


def test_the_gateways_user_cannot_wipe_or_reconfigure_redis(
    acl_redis: tuple[str, dict[str, str]],
) -> None:
    base, passwords = acl_redis
    with redis.Redis.from_url(url_of(base, "gateway", passwords["gateway"])) as gateway:
        gateway.set("marionette:probe", "1")  # its own keys: yes
        for forbidden in (gateway.flushall, gateway.keys, lambda: gateway.config_set("dir", "/tmp"),
                          lambda: gateway.set("other:key", "1")):  # fmt: skip
            with pytest.raises(redis.exceptions.NoPermissionError):
                forbidden()
    with redis.Redis.from_url(base) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with redis.Redis.from_url(url_of(base, "health", passwords["health"])) as health:
        assert health.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            health.get("marionette:probe")
    assert set(USERS) >= {"gateway", "policy", "tts", "asr", "health"}


def test_a_weak_password_is_refused_naming_its_variable() -> None:
    passwords = new_passwords() | {"tts": "short"}
    with pytest.raises(ValueError, match="REDIS_PASSWORD_TTS"):
        acl_file(passwords)


def test_the_compose_file_uses_the_acl() -> None:
    compose = (Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml").read_text()
    assert "--aclfile" in compose
    for user in ("gateway", "policy", "tts"):
        assert f"redis://{user}:${{{'REDIS_PASSWORD_' + user.upper()}" in compose
