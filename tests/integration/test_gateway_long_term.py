"""The long-term memory API (/api/memory) on a real gateway (uvicorn on a free port, real
Redis), a real sqlite-vec store in the test's folder and the real embedder: counts,
search, export and import, reset, backups and restore, forgetting a viewer, and every way
a request is refused."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from contracts import Control
from contracts.control import MemoryForget
from contracts.topics import CONTROL
from services.bus import BusSettings
from services.gateway.routes.long_term import LongTermAccess
from tests.helpers import read_topic
from tests.integration.gateway_fixtures import (
    OPERATOR_KEY,
    READ_KEY,
    RunningGateway,
    running_gateway,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ADA = "character:ada"
BOB = "session:npc-bob"

# Times given out of order: the listing must come back oldest first.
SEED: list[dict[str, Any]] = [
    {"kind": "fact", "text": "ada said: my cat is called Miso", "author": "ada",
     "created_at": "2026-03-01T12:00:02Z"},
    {"kind": "fact", "text": "bob said: I live in a lighthouse on the coast", "author": "bob",
     "created_at": "2026-03-01T12:00:00Z"},
    {"kind": "fact", "text": "ada said: I play the cello in an orchestra", "author": "ada",
     "created_at": "2026-03-01T12:00:03Z"},
    {"kind": "episode", "text": "In a conversation: everyone argued about pineapple on pizza",
     "created_at": "2026-03-01T12:00:01Z"},
    {"kind": "note", "text": "bob prefers to be called Captain", "author": "bob",
     "created_at": "2026-03-01T12:00:04Z"},
]  # fmt: skip
QUERIES = ("what is the name of ada's pet", "where does bob live", "food opinions")


@pytest.fixture
async def memory_gateway(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    env = {"MARIONETTE_MEMORY_PATH": str(tmp_path / "memory" / "long-term.sqlite3")}
    async with running_gateway(bus_settings, monkeypatch, env) as running:
        yield running
        await close_long_term(running)


async def close_long_term(running: RunningGateway) -> None:
    """The gateway serves without lifespan events: the test closes what the app opened."""
    access: LongTermAccess | None = getattr(running.runtime.stage.app.state, "long_term", None)
    if access is not None:
        await access.close()


async def seed(http: httpx.AsyncClient, scope: str, items: list[dict[str, Any]] = SEED) -> None:
    answer = await http.post(f"/api/memory/scopes/{scope}/import", json={"items": items})
    assert answer.status_code == 200, answer.text
    assert answer.json()["new"] == len(items)


async def listed(http: httpx.AsyncClient, scope: str, **params: str) -> list[dict[str, Any]]:
    answer = await http.get(f"/api/memory/scopes/{scope}/items", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def searched(http: httpx.AsyncClient, scope: str, query: str) -> list[tuple[str, float]]:
    answer = await http.get(f"/api/memory/scopes/{scope}/items", params={"q": query})
    assert answer.status_code == 200, answer.text
    return [(hit["item"]["id"], hit["score"]) for hit in answer.json()["hits"]]


async def search_all(http: httpx.AsyncClient, scope: str) -> dict[str, list[tuple[str, float]]]:
    return {query: await searched(http, scope, query) for query in QUERIES}


def same_results(
    before: dict[str, list[tuple[str, float]]], after: dict[str, list[tuple[str, float]]]
) -> None:
    for query in QUERIES:
        assert [i for i, _ in after[query]] == [i for i, _ in before[query]], query
        for (_, was), (_, now) in zip(before[query], after[query], strict=True):
            assert now == pytest.approx(was, abs=1e-5), query


def field_of(answer: httpx.Response) -> str:
    fields: list[dict[str, str]] = answer.json()["fields"]
    return fields[0]["field"]


# --- reading --------------------------------------------------------------------------------


async def test_counts_listing_and_search_by_meaning(memory_gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=memory_gateway.url) as http:
        assert (await http.get("/api/memory/scopes")).json() == []
        await seed(http, ADA)
        await seed(http, BOB, SEED[:2])
        scopes = (await http.get("/api/memory/scopes")).json()
        one = (await http.get(f"/api/memory/scopes/{ADA}")).json()
        items = await listed(http, ADA)
        adas = await listed(http, ADA, author="ada")
        answer = (
            await http.get(f"/api/memory/scopes/{ADA}/items", params={"q": QUERIES[0]})
        ).json()
        only_bob = (
            await http.get(
                f"/api/memory/scopes/{ADA}/items", params={"q": QUERIES[0], "author": "bob"}
            )
        ).json()

    assert [s["scope"] for s in scopes] == [ADA, BOB]
    assert [s["items"] for s in scopes] == [5, 2]
    assert one["by_kind"] == {"fact": 3, "episode": 1, "note": 1}
    assert one["authors"] == 2  # ada and bob; the episode has none
    assert one["oldest"].startswith("2026-03-01T12:00:00")
    assert one["newest"].startswith("2026-03-01T12:00:04")
    # Oldest first, whatever order they came in; every item got the path's scope and an id.
    assert [i["created_at"][-3:] for i in items] == ["00Z", "01Z", "02Z", "03Z", "04Z"]
    assert {i["scope"] for i in items} == {ADA}
    assert len({i["id"] for i in items}) == 5
    assert [i["text"] for i in adas] == [SEED[0]["text"], SEED[2]["text"]]
    # Search: ada's cat first, best first, cosine similarities.
    hits = answer["hits"]
    assert answer["items"] == []
    assert answer["query"] == QUERIES[0]
    assert hits[0]["item"]["text"] == "ada said: my cat is called Miso"
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert -1 <= scores[-1] <= scores[0] <= 1
    assert {hit["item"]["author"] for hit in only_bob["hits"]} == {"bob"}
    assert len(only_bob["hits"]) == 2


# --- export, import, reset, backups, restore ------------------------------------------------


async def test_export_reset_and_import_of_the_export_give_the_same_memory(
    memory_gateway: RunningGateway,
) -> None:
    async with httpx.AsyncClient(base_url=memory_gateway.url) as http:
        await seed(http, ADA)
        before_items = await listed(http, ADA)
        before = await search_all(http, ADA)
        exported = await http.get(f"/api/memory/scopes/{ADA}/export")
        reset = await http.post(f"/api/memory/scopes/{ADA}/reset")
        emptied = (await http.get(f"/api/memory/scopes/{ADA}")).json()
        empty_search = await searched(http, ADA, QUERIES[0])
        imported = await http.post(f"/api/memory/scopes/{ADA}/import", json=exported.json())
        again = await http.post(f"/api/memory/scopes/{ADA}/import", json=exported.json())
        after_items = await listed(http, ADA)
        after = await search_all(http, ADA)
        backups = (await http.get(f"/api/memory/scopes/{ADA}/backups")).json()

    assert exported.status_code == 200
    assert exported.headers["content-disposition"] == (
        'attachment; filename="long-term-character_ada.json"'
    )
    document = exported.json()
    assert document["scope"] == ADA
    assert document["embedder"] == "all-MiniLM-L6-v2"
    assert document["items"] == before_items
    assert document["exported_at"]
    assert reset.status_code == 200
    assert reset.json()["items"] == 5
    assert reset.json()["reason"] == "reset"
    assert emptied["items"] == 0
    assert empty_search == []
    assert imported.json() == {**imported.json(), "items": 5, "new": 5}
    assert again.json()["new"] == 0  # the same ids: stored already, left as they are
    assert after_items == before_items
    same_results(before, after)
    assert [b["id"] for b in backups] == [reset.json()["id"]]


async def test_an_export_imported_into_another_scope_moves_there(
    memory_gateway: RunningGateway,
) -> None:
    async with httpx.AsyncClient(base_url=memory_gateway.url) as http:
        await seed(http, ADA)
        exported = (await http.get(f"/api/memory/scopes/{ADA}/export")).json()
        imported = await http.post(f"/api/memory/scopes/{BOB}/import", json=exported)
        moved = await listed(http, BOB)
        kept = await listed(http, ADA)
    assert imported.json()["new"] == 5
    assert {i["scope"] for i in moved} == {BOB}
    assert [i["text"] for i in moved] == [i["text"] for i in kept]


async def test_a_reset_is_undone_by_restoring_its_backup(memory_gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=memory_gateway.url) as http:
        await seed(http, ADA)
        before_items = await listed(http, ADA)
        before = await search_all(http, ADA)
        on_demand = await http.post(f"/api/memory/scopes/{ADA}/backups", json={"reason": "test"})
        reset = (await http.post(f"/api/memory/scopes/{ADA}/reset")).json()
        await seed(http, ADA, SEED[:1])  # memory goes on after the reset...
        restored = await http.post(
            f"/api/memory/scopes/{ADA}/restore", json={"backup_id": reset["id"]}
        )
        after_items = await listed(http, ADA)
        after = await search_all(http, ADA)
        backups = (await http.get(f"/api/memory/scopes/{ADA}/backups")).json()

    assert on_demand.status_code == 200
    assert on_demand.json()["items"] == 5
    assert restored.json() == {"scope": ADA, "backup_id": reset["id"], "items": 5}
    assert after_items == before_items  # ...and the restore replaces what came since
    same_results(before, after)
    assert [(b["id"], b["reason"]) for b in backups] == [
        (reset["id"], "reset"),
        (on_demand.json()["id"], "test"),
    ]


async def test_deleting_one_item(memory_gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=memory_gateway.url) as http:
        await seed(http, ADA)
        victim = (await listed(http, ADA))[0]["id"]
        deleted = await http.delete(f"/api/memory/scopes/{ADA}/items/{victim}")
        again = await http.delete(f"/api/memory/scopes/{ADA}/items/{victim}")
        left = await listed(http, ADA)
    assert deleted.json() == {"scope": ADA, "item_id": victim, "deleted": 1}
    assert again.status_code == 404
    assert field_of(again) == "path.item_id"
    assert victim not in {i["id"] for i in left}
    assert len(left) == 4


async def test_an_import_may_be_larger_than_other_bodies(memory_gateway: RunningGateway) -> None:
    items = [
        {
            "kind": "fact",
            "text": f"viewer{n % 7} said: my lucky number is {n}",
            "author": f"v{n % 7}",
            # As an export carries them: the bytes of a body, not more to embed.
            "session_id": "twitch-main-channel",
            "turn_id": f"gw-chat-{n:032x}",
        }
        for n in range(400)
    ]
    body = json.dumps({"items": items}).encode()
    assert len(body) > 64 * 1024  # over MARIONETTE_GATEWAY_MAX_BODY_BYTES's default
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=memory_gateway.url) as http:
        imported = await http.post(f"/api/memory/scopes/{ADA}/import", content=body,
                                   headers=headers)  # fmt: skip
        elsewhere = await http.post(f"/api/memory/scopes/{ADA}/restore", content=body,
                                    headers=headers)  # fmt: skip
        stats = (await http.get(f"/api/memory/scopes/{ADA}")).json()
    assert imported.status_code == 200, imported.text
    assert imported.json()["new"] == 400
    assert stats["items"] == 400
    assert stats["authors"] == 7
    assert elsewhere.status_code == 413  # other routes keep the setting's limit


# --- a viewer's privacy request -------------------------------------------------------------


async def test_forgetting_a_viewer_deletes_them_everywhere_and_tells_policy(
    memory_gateway: RunningGateway, redis_client: Redis, bus_settings: BusSettings
) -> None:
    async with httpx.AsyncClient(base_url=memory_gateway.url) as http:
        await seed(http, ADA)
        await seed(http, BOB, SEED[:3])
        backup = (await http.post(f"/api/memory/scopes/{ADA}/backups")).json()
        forgot = await http.delete("/api/memory/viewers/ada")
        left = await listed(http, ADA) + await listed(http, BOB)
        # The backup taken before holds nothing of ada's any more either.
        await http.post(f"/api/memory/scopes/{ADA}/restore", json={"backup_id": backup["id"]})
        restored = await listed(http, ADA)
        hits = await searched(http, ADA, "ada's cat")

    assert forgot.status_code == 200, forgot.text
    answer = forgot.json()
    assert answer["author"] == "ada"
    assert answer["long_term"] is True
    assert answer["long_term_items"] == 4  # two in each scope
    assert {i["author"] for i in left} == {"bob", None}
    assert len(left) == 3 + 1
    assert "ada" not in {i["author"] for i in restored}
    assert len(restored) == 3
    assert len(hits) == 3  # search finds no vector left behind
    published = [m for m in await read_topic(redis_client, CONTROL, bus_settings.partitions)
                 if isinstance(m, Control)]  # fmt: skip
    assert [m.command for m in published] == [MemoryForget(author="ada")]
    assert published[0].session_id == "control"
    assert answer["published"]["message"]["command"] == {"kind": "memory_forget", "author": "ada"}
    assert answer["published"]["entry_id"]


# --- refusals -------------------------------------------------------------------------------


async def test_bad_requests_name_the_field(memory_gateway: RunningGateway) -> None:
    base = f"/api/memory/scopes/{ADA}"
    async with httpx.AsyncClient(base_url=memory_gateway.url) as http:
        await seed(http, ADA, SEED[:1])
        no_text = await http.post(f"{base}/import", json={"items": [{"kind": "fact"}]})
        bad_kind = await http.post(
            f"{base}/import", json={"items": [SEED[0], {**SEED[1], "kind": "rumour"}]}
        )
        short_term = await http.post(f"{base}/import", json={"memory": {"turns": []}})
        not_a_list = await http.post(f"{base}/import", json={"items": "all of them"})
        unknown_backup = await http.post(f"{base}/restore", json={"backup_id": "nope"})
        no_backup_id = await http.post(f"{base}/restore", json={})
        bad_scope = await http.get("/api/memory/scopes/no spaces here")
        bad_limit = await http.get(f"{base}/items", params={"limit": 0})
        long_author = await http.delete("/api/memory/viewers/" + "x" * 65)
        unchanged = await listed(http, ADA)

    assert (no_text.status_code, field_of(no_text)) == (422, "body.items.0.text")
    assert (bad_kind.status_code, field_of(bad_kind)) == (422, "body.items.1.kind")
    assert short_term.status_code == 422
    assert {f["field"] for f in short_term.json()["fields"]} == {"body.memory", "body.items"}
    assert (not_a_list.status_code, field_of(not_a_list)) == (422, "body.items")
    assert (unknown_backup.status_code, field_of(unknown_backup)) == (404, "body.backup_id")
    assert "nope" in unknown_backup.json()["error"]
    assert (no_backup_id.status_code, field_of(no_backup_id)) == (422, "body.backup_id")
    assert (bad_scope.status_code, field_of(bad_scope)) == (422, "path.scope")
    assert (bad_limit.status_code, field_of(bad_limit)) == (422, "query.limit")
    assert (long_author.status_code, field_of(long_author)) == (422, "path.author")
    assert len(unchanged) == 1  # a refused import stores nothing, not even its good items


async def test_with_long_term_memory_off_the_routes_say_which_setting(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    redis_client: Redis,
) -> None:  # fmt: skip
    env = {
        "MARIONETTE_MEMORY_LONG_TERM": "false",
        "MARIONETTE_MEMORY_PATH": str(tmp_path / "never-created.sqlite3"),
    }
    async with running_gateway(bus_settings, monkeypatch, env) as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            read = await http.get("/api/memory/scopes")
            changed = await http.post(f"/api/memory/scopes/{ADA}/reset")
            forgot = await http.delete("/api/memory/viewers/ada")
        await close_long_term(running)
    assert read.status_code == 404
    assert "MARIONETTE_MEMORY_LONG_TERM" in read.json()["error"]
    assert changed.status_code == 409
    assert "MARIONETTE_MEMORY_LONG_TERM" in changed.json()["error"]
    # A privacy request still reaches policy's short-term memory.
    assert forgot.status_code == 200
    assert forgot.json()["long_term"] is False
    assert forgot.json()["long_term_items"] == 0
    published = await read_topic(redis_client, CONTROL, bus_settings.partitions)
    assert [m.command for m in published if isinstance(m, Control)] == [MemoryForget(author="ada")]
    assert not (tmp_path / "never-created.sqlite3").exists()


async def test_the_read_key_reads_and_only_the_operator_key_changes(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {
        "MARIONETTE_GATEWAY_OPERATOR_KEY": OPERATOR_KEY,
        "MARIONETTE_GATEWAY_READ_KEY": READ_KEY,
        "MARIONETTE_MEMORY_PATH": str(tmp_path / "long-term.sqlite3"),
    }
    reader = {"Authorization": f"Bearer {READ_KEY}"}
    async with running_gateway(bus_settings, monkeypatch, env) as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            read = await http.get(f"/api/memory/scopes/{ADA}/export", headers=reader)
            reset = await http.post(f"/api/memory/scopes/{ADA}/reset", headers=reader)
            forgot = await http.delete("/api/memory/viewers/ada", headers=reader)
            nobody = await http.get("/api/memory/scopes")
        await close_long_term(running)
    assert read.status_code == 200
    assert read.json()["items"] == []
    assert reset.status_code == 403
    assert forgot.status_code == 403
    assert nobody.status_code == 401


async def test_with_the_redis_store_the_gateway_uses_the_bus_redis(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch, redis_client: Redis
) -> None:
    env = {"MARIONETTE_MEMORY_STORE": "redis"}
    async with running_gateway(bus_settings, monkeypatch, env) as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            await seed(http, ADA)
            before = await search_all(http, ADA)
            reset = (await http.post(f"/api/memory/scopes/{ADA}/reset")).json()
            emptied = (await http.get(f"/api/memory/scopes/{ADA}")).json()
            await http.post(f"/api/memory/scopes/{ADA}/restore", json={"backup_id": reset["id"]})
            after = await search_all(http, ADA)
            forgot = (await http.delete("/api/memory/viewers/bob")).json()
            left = await listed(http, ADA)
        await close_long_term(running)
    assert emptied["items"] == 0
    same_results(before, after)
    assert forgot["long_term_items"] == 2
    assert {i["author"] for i in left} == {"ada", None}
    assert await redis_client.hlen("marionette:memory:lt:{character:ada}:items") == 3
