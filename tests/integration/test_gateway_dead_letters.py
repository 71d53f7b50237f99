"""GET /api/dead-letters and POST /api/dead-letters/{topic}/redrive on a real gateway, a
real Redis and a running stage: entries the stage gives up on (a malformed one, and one
its handler fails on) are listed with their reasons, and re-driven to be handled again."""

from typing import cast

import httpx
import pytest
from redis.asyncio import Redis

from contracts import ChatMessage
from contracts.topics import CHAT_MESSAGE
from services.bus import Bus, BusSettings, Producer, Stage, StageRuntime, consumes
from services.bus.dead_letters import list_dead_letters
from services.bus.partitions import stream_for
from services.bus.wire import REDRIVEN_FIELD
from tests.helpers import wait_until
from tests.integration.gateway_fixtures import (
    OPERATOR_KEY,
    READ_KEY,
    RunningGateway,
    running_gateway,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MALFORMED = {b"__data__": b"not a message at all"}


class Picky(Stage):
    """Fails on "poison" while broken; keeps what it handled."""

    name = "picky"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.handled: list[str] = []
        self.broken = True

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        if self.broken and message.text == "poison":
            raise RuntimeError("cannot stomach poison")
        self.handled.append(message.text)


def chat(seq: int, text: str) -> ChatMessage:
    return ChatMessage(session_id="dl", turn_id="t1", seq=seq, platform="twitch",
                       author="viewer", text=text)  # fmt: skip


async def test_dead_letters_are_listed_and_redriven_one_or_all(
    gateway: RunningGateway, bus_settings: BusSettings, redis_client: Redis
) -> None:
    stream = stream_for(CHAT_MESSAGE, "dl", bus_settings.partitions)
    async with (
        StageRuntime(Picky, bus_settings) as runtime,
        Producer(bus_settings, "viewer", [CHAT_MESSAGE]) as producer,
        httpx.AsyncClient(base_url=gateway.url) as http,
    ):
        await redis_client.xadd(stream, MALFORMED)  # type: ignore[arg-type]
        await producer.publish(chat(0, "poison"))
        await producer.publish(chat(1, "fine"))

        async def both_dead() -> bool:
            return len(await list_dead_letters(redis_client, "chat.message")) == 2

        async def fine_handled() -> bool:
            return runtime.stage.handled == ["fine"]

        await wait_until(both_dead, 20, "the malformed and the poison entry dead-lettered")
        # The entry after the poison may still be in its handler when the poison is dead.
        await wait_until(fine_handled, 20, "the entry after the poison handled, once")

        # Listed, oldest first, with why, how often, by whom and when.
        listed = await http.get("/api/dead-letters", params={"topic": "chat.message"})
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["topic"] == "chat.message"
        malformed, poison = body["dead_letters"]
        assert malformed["delivery_count"] >= 1
        assert malformed["reason"]
        assert malformed["source_stream"] == stream
        assert "cannot stomach poison" in poison["reason"]
        assert poison["delivery_count"] == bus_settings.max_deliveries
        assert (poison["group"], poison["consumer"]) == ("picky", runtime.replica_id)
        assert poison["failed_at"].endswith("+00:00")
        assert '"text":"poison"' in poison["payload_preview"]
        assert poison["payload_bytes"] > 0
        everything = (await http.get("/api/dead-letters")).json()
        assert everything["topic"] is None
        assert [d["dlq_id"] for d in everything["dead_letters"]] == [
            malformed["dlq_id"], poison["dlq_id"],
        ]  # fmt: skip
        status = (await http.get("/api/status")).json()
        assert status["dead_letters"] == {"chat.message": 2}

        # One, by id, once the stage is fixed: handled this time.
        runtime.stage.broken = False
        one = await http.post("/api/dead-letters/chat.message/redrive",
                              json={"id": poison["dlq_id"]})  # fmt: skip
        assert one.status_code == 200, one.text
        assert one.json() == {"topic": "chat.message", "redriven": [poison["dlq_id"]], "count": 1}

        async def poison_handled() -> bool:
            return "poison" in runtime.stage.handled

        await wait_until(poison_handled, 20, "the re-driven message handled")
        [left] = await list_dead_letters(redis_client, "chat.message")
        assert left.dlq_id == malformed["dlq_id"]

        # The rest (no id): the malformed entry goes back on its stream, as it was, and
        # is dead-lettered again, since it is no better now.
        rest = await http.post("/api/dead-letters/chat.message/redrive", json={})
        assert rest.json()["redriven"] == [malformed["dlq_id"]]
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis_client.xrange(stream))
        again = [fields for _, fields in entries if fields.get(REDRIVEN_FIELD) == b"1"]
        assert len(again) == 2, "the poison one, then the malformed one"
        assert {k: v for k, v in again[-1].items() if k != REDRIVEN_FIELD} == MALFORMED

        async def dead_again() -> bool:
            letters = await list_dead_letters(redis_client, "chat.message")
            return [letter.dlq_id != malformed["dlq_id"] for letter in letters] == [True]

        await wait_until(dead_again, 20, "the malformed entry dead-lettered again")
        nothing = await http.post("/api/dead-letters/chat.message/redrive",
                                  json={"id": malformed["dlq_id"]})  # fmt: skip
        assert nothing.status_code == 404
        assert nothing.json()["fields"][0]["field"] == "body.id"


async def test_bad_requests_name_the_field(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        topic = await http.get("/api/dead-letters", params={"topic": "chat.nothing"})
        limit = await http.get("/api/dead-letters", params={"limit": 0})
        path = await http.post("/api/dead-letters/chat.nothing/redrive", json={})
        entry_id = await http.post("/api/dead-letters/chat.message/redrive", json={"id": "x"})
        extra = await http.post("/api/dead-letters/chat.message/redrive", json={"ids": []})
    assert (topic.status_code, topic.json()["fields"][0]["field"]) == (422, "query.topic")
    assert "known topics" in topic.json()["error"]
    assert (limit.status_code, limit.json()["fields"][0]["field"]) == (422, "query.limit")
    assert (path.status_code, path.json()["fields"][0]["field"]) == (404, "path.topic")
    assert (entry_id.status_code, entry_id.json()["fields"][0]["field"]) == (422, "body.id")
    assert (extra.status_code, extra.json()["fields"][0]["field"]) == (422, "body.ids")


async def test_the_read_key_may_list_but_not_redrive(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"MARIONETTE_GATEWAY_OPERATOR_KEY": OPERATOR_KEY,
           "MARIONETTE_GATEWAY_READ_KEY": READ_KEY}  # fmt: skip
    async with (
        running_gateway(bus_settings, monkeypatch, env) as gateway,
        httpx.AsyncClient(base_url=gateway.url) as http,
    ):
        nobody = await http.get("/api/dead-letters")
        reader = {"Authorization": f"Bearer {READ_KEY}"}
        listed = await http.get("/api/dead-letters", headers=reader)
        refused = await http.post("/api/dead-letters/chat.message/redrive", headers=reader,
                                  json={})  # fmt: skip
        operator = await http.post("/api/dead-letters/chat.message/redrive", json={},
                                   params={"key": OPERATOR_KEY})  # fmt: skip
    assert nobody.status_code == 401
    assert listed.status_code == 200
    assert listed.json()["dead_letters"] == []
    assert refused.status_code == 403
    assert operator.json() == {"topic": "chat.message", "redriven": [], "count": 0}
