"""The panel's Memory card in a real Chromium, on a real gateway and Redis, with a real
sqlite-vec long-term store in the module's folder (MARIONETTE_MEMORY_PATH) and the real
embedder: the memories are seeded through the API (POST .../import), then everything else
is done in the page and checked against the API and the bus.

What it proves: the scopes are listed in a streamer's words with their counts; a scope's
memories come newest first; a search by meaning puts the right memory first, with scores;
an export downloads the scope's JSON; a reset keeps a backup that is listed and restores
every memory; one memory can be deleted; forgetting a viewer removes them from every scope
and sends policy the MemoryForget; Cancel changes nothing; the card says when memory is
empty or off; a read key may look but not change. Screenshots go to
tests/browser/screenshots/.
"""

import asyncio
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
from services.memory.access import LongTermAccess
from tests.browser.conftest import page_errors, screenshot_path
from tests.helpers import read_topic
from tests.integration.gateway_fixtures import (
    OPERATOR_KEY,
    READ_KEY,
    RunningGateway,
    running_gateway,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

UI_TIMEOUT_MS = 10_000
ADA = "character:ada"  # the live character
GRUMPY = "session:grumpy:alice"  # an NPC's memory of one player
# Given out of order: the card must show them newest first.
SEED: list[dict[str, Any]] = [
    {"kind": "fact", "text": "mia said: my cat is called Miso", "author": "mia",
     "created_at": "2026-03-01T12:00:02Z"},
    {"kind": "fact", "text": "bob said: I live in a lighthouse on the coast", "author": "bob",
     "created_at": "2026-03-01T12:00:00Z"},
    {"kind": "fact", "text": "mia said: I play the cello in an orchestra", "author": "mia",
     "created_at": "2026-03-01T12:00:03Z"},
    {"kind": "episode", "text": "In a conversation: everyone argued about pineapple on pizza",
     "created_at": "2026-03-01T12:00:01Z"},
    {"kind": "note", "text": "bob prefers to be called Captain", "author": "bob",
     "created_at": "2026-03-01T12:00:04Z"},
]  # fmt: skip
NEWEST_FIRST = [item["text"] for item in sorted(SEED, key=lambda i: i["created_at"], reverse=True)]
GRUMPY_SEED: list[dict[str, Any]] = [
    {"kind": "fact", "text": "alice said: I lost my sword in the swamp", "author": "alice"},
    {"kind": "fact", "text": "bob said: alice owes me ten gold", "author": "bob"},
]


async def close_long_term(running: RunningGateway) -> None:
    """The gateway serves without lifespan events: the test closes what the app opened."""
    access: LongTermAccess | None = getattr(running.runtime.stage.app.state, "long_term", None)
    if access is not None:
        await access.close()


@pytest.fixture(scope="module")
async def memory_gateway(
    pages_bus: BusSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGateway]:
    """A gateway without keys whose long-term store is a sqlite file of the module's own."""
    store = tmp_path_factory.mktemp("memory") / "long-term.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MARIONETTE_GATEWAY_OPERATOR_KEY", raising=False)
        patch.delenv("MARIONETTE_GATEWAY_READ_KEY", raising=False)
        patch.delenv("MARIONETTE_MEMORY_LONG_TERM", raising=False)
        async with running_gateway(pages_bus, patch, {"MARIONETTE_MEMORY_PATH": str(store)}) as gw:
            # Settings are read on first use: use them now, while this module's are set.
            async with httpx.AsyncClient(base_url=gw.url) as http:
                assert (await http.get("/api/memory/scopes")).status_code == 200
            yield gw
            await close_long_term(gw)


@pytest.fixture
async def http(memory_gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=memory_gateway.url, timeout=30) as client:
        yield client


async def seed(http: httpx.AsyncClient, scope: str, items: list[dict[str, Any]]) -> None:
    answer = await http.post(f"/api/memory/scopes/{scope}/import", json={"items": items})
    assert answer.status_code == 200, answer.text
    assert answer.json()["new"] == len(items)


async def texts(http: httpx.AsyncClient, scope: str) -> list[str]:
    answer = await http.get(f"/api/memory/scopes/{scope}/items")
    assert answer.status_code == 200, answer.text
    return [item["text"] for item in answer.json()["items"]]


async def authors(http: httpx.AsyncClient, scope: str) -> set[str | None]:
    answer = await http.get(f"/api/memory/scopes/{scope}/items")
    return {item["author"] for item in answer.json()["items"]}


async def test_a_streamer_browses_searches_resets_restores_and_forgets(
    browser: Any, memory_gateway: RunningGateway, http: httpx.AsyncClient, pages_bus: BusSettings
) -> None:
    ctx = await browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = await ctx.new_page()
    errors = page_errors(page)
    await page.goto(f"{memory_gateway.url}/?session=memory-show")
    card = page.locator("#memory")
    state = card.locator("#memory-state")

    # Nothing remembered yet: said so, in words.
    await expect(state).to_contain_text("remembers nothing yet", timeout=UI_TIMEOUT_MS)
    await expect(card).to_have_attribute("data-state", "empty")

    # Memories arrive (here through the API); Refresh lists who remembers, with counts.
    await seed(http, ADA, SEED)
    await seed(http, GRUMPY, GRUMPY_SEED)
    await card.locator("#memory-refresh").click()
    scopes = card.locator("#memory-scopes > li")
    await expect(scopes).to_have_count(2, timeout=UI_TIMEOUT_MS)
    await expect(state).to_be_hidden()
    ada = card.locator(f"li[data-scope='{ADA}']")
    await expect(ada.locator(".scope-name")).to_have_text("ada")
    await expect(ada.locator(".scope-who")).to_have_text("the live character")
    await expect(ada.locator(".scope-counts")).to_have_text("5 memories · 2 viewers")
    grumpy = card.locator(f"li[data-scope='{GRUMPY}']")
    await expect(grumpy.locator(".scope-name")).to_have_text("grumpy")
    await expect(grumpy.locator(".scope-who")).to_have_text("NPC · remembers player alice")
    await expect(grumpy.locator(".scope-counts")).to_have_text("2 memories · 2 viewers")

    # Picked: its memories, newest first, with the counts by kind.
    await ada.locator("button").click()
    await expect(ada.locator("button")).to_have_attribute("aria-pressed", "true")
    items = card.locator("#memory-items .memory-text")
    await expect(items).to_have_text(NEWEST_FIRST, timeout=UI_TIMEOUT_MS)
    await expect(card.locator("#memory-scope-title")).to_contain_text(
        "3 facts · 1 summary · 1 note"
    )
    await expect(card.locator("#memory-items-state")).to_have_text("5 memories, newest first.")

    # Searched by meaning: the right memory first, every hit with its score, best first.
    await card.locator("#memory-query").fill("what is the name of mia's pet")
    await card.locator("#memory-search button[type=submit]").click()
    await expect(card.locator("#memory-items-state")).to_contain_text(
        "closest in meaning to “what is the name of mia's pet”", timeout=UI_TIMEOUT_MS
    )
    await expect(items.first).to_have_text("mia said: my cat is called Miso")
    scores = [float(text.removeprefix("match "))
              for text in await card.locator("#memory-items .score").all_inner_texts()]  # fmt: skip
    assert len(scores) == 5
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > scores[1] + 0.1, scores  # clearly the best, not a tie
    # The hardly related (under 0.3) are faded, the best is not.
    weak = [await row.get_attribute("data-weak") is not None
            for row in await card.locator("#memory-items li").all()]  # fmt: skip
    assert weak == [score < 0.3 for score in scores], (weak, scores)
    assert not weak[0]
    await card.screenshot(path=str(screenshot_path("panel-memory-search.png")))
    await card.locator("#memory-show-all").click()
    await expect(items).to_have_text(NEWEST_FIRST)
    await expect(card.locator("#memory-items .score")).to_have_count(0)

    # Export: the scope's JSON, as a file.
    async with page.expect_download() as downloading:
        await card.locator("#memory-export").click()
    download = await downloading.value
    assert download.suggested_filename == "long-term-character_ada.json"
    exported = json.loads(await asyncio.to_thread(Path(await download.path()).read_text))
    assert exported["scope"] == ADA
    assert sorted(i["text"] for i in exported["items"]) == sorted(NEWEST_FIRST)
    await expect(card.locator("#memory-note")).to_contain_text("Saved long-term-character_ada")

    # Reset, cancelled at first: nothing changes.
    dialog = page.locator("#memory-confirm")
    await card.locator("#memory-reset").click()
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#memory-confirm-body")).to_contain_text("A backup is kept first")
    await expect(dialog.locator("button[value=no]")).to_be_focused()  # the safe choice
    await card.screenshot(path=str(screenshot_path("panel-memory-confirm.png")))
    await page.screenshot(path=str(screenshot_path("panel-memory-confirm-page.png")))
    await dialog.locator("button[value=no]").click()
    await expect(dialog).to_be_hidden()
    assert len(await texts(http, ADA)) == 5

    # Reset, confirmed: emptied, and the backup it kept is listed.
    await card.locator("#memory-reset").click()
    await dialog.locator("#memory-confirm-yes").click()
    await expect(card.locator("#memory-note")).to_contain_text(
        "Reset. The 5 memories are kept in the backup of", timeout=UI_TIMEOUT_MS
    )
    await expect(items).to_have_count(0)
    await expect(card.locator("#memory-items-state")).to_contain_text("Nothing remembered here")
    assert await texts(http, ADA) == []
    backups = card.locator("#memory-backups li.backup")
    await expect(backups).to_have_count(1)
    await expect(backups.first).to_have_attribute("data-items", "5")
    await expect(backups.first).to_contain_text("5 memories")
    await expect(card.locator("#memory-backups-empty")).to_be_hidden()
    # Still listed, though empty: its backup is there to restore.
    await expect(ada.locator(".scope-counts")).to_have_text("0 memories · 0 viewers")

    # Restored from that backup: every memory is back.
    await backups.first.locator("button").click()
    await expect(dialog.locator("#memory-confirm-body")).to_contain_text("Its 5 memories replace")
    await dialog.locator("#memory-confirm-yes").click()
    await expect(items).to_have_text(NEWEST_FIRST, timeout=UI_TIMEOUT_MS)
    await expect(card.locator("#memory-note")).to_have_text(
        "Restored: ada remembers 5 memories again."
    )
    assert sorted(await texts(http, ADA)) == sorted(NEWEST_FIRST)
    await expect(ada.locator(".scope-counts")).to_have_text("5 memories · 2 viewers")

    # One memory deleted (the summary).
    pizza = card.locator("#memory-items li[data-kind='episode']")
    await pizza.locator("button").click()
    await expect(dialog.locator("#memory-confirm-body")).to_contain_text("pineapple on pizza")
    await dialog.locator("#memory-confirm-yes").click()
    await expect(items).to_have_count(4, timeout=UI_TIMEOUT_MS)
    await expect(card.locator("#memory-items")).not_to_contain_text("pineapple")
    assert len(await texts(http, ADA)) == 4

    # Forget a viewer: bob goes from every scope, and policy is told to scrub short-term.
    await card.locator("#memory-forget-name").fill("bob")
    await card.locator("#memory-forget button[type=submit]").click()
    body = dialog.locator("#memory-confirm-body")
    await expect(body).to_contain_text("every NPC")
    await expect(body).to_contain_text("every session's short-term memory")
    await dialog.locator("#memory-confirm-yes").click()
    await expect(card.locator("#memory-note")).to_have_text(
        "Forgot bob: 3 memories deleted; their lines are being taken out of short-term memory.",
        timeout=UI_TIMEOUT_MS,
    )
    await expect(items).to_have_count(2)
    await expect(card.locator("#memory-items")).not_to_contain_text("bob")
    await expect(card.locator("#memory-forget-name")).to_have_value("")
    await expect(grumpy.locator(".scope-counts")).to_have_text("1 memory · 1 viewer")
    assert await authors(http, ADA) == {"mia"}
    assert await authors(http, GRUMPY) == {"alice"}
    kept = (await http.get(f"/api/memory/scopes/{ADA}/backups")).json()
    assert [backup["items"] for backup in kept] == [3]  # the reset's backup, without bob's two
    redis = Redis.from_url(str(pages_bus.redis_url))
    controls = await read_topic(redis, CONTROL, pages_bus.partitions)
    await redis.aclose()
    assert [m.command for m in controls if isinstance(m, Control)] == [MemoryForget(author="bob")]

    # What it looks like: light, dark, and on a phone.
    await page.wait_for_timeout(100)
    await card.screenshot(path=str(screenshot_path("panel-memory.png")))
    await page.emulate_media(color_scheme="dark")
    await card.screenshot(path=str(screenshot_path("panel-memory-dark.png")))
    await page.emulate_media(color_scheme="light")
    await page.set_viewport_size({"width": 390, "height": 844})
    await card.screenshot(path=str(screenshot_path("panel-memory-390.png")))
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await ctx.close()
    assert errors == []


async def test_with_memory_off_the_card_says_how_to_turn_it_on(
    browser: Any, pages_bus: BusSettings, tmp_path: Path
) -> None:
    env = {"MARIONETTE_MEMORY_LONG_TERM": "false",
           "MARIONETTE_MEMORY_PATH": str(tmp_path / "never.sqlite3")}  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MARIONETTE_GATEWAY_OPERATOR_KEY", raising=False)
        patch.delenv("MARIONETTE_GATEWAY_READ_KEY", raising=False)
        async with running_gateway(pages_bus, patch, env) as gateway:
            ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
            page = await ctx.new_page()
            await page.goto(f"{gateway.url}/?session=memory-off")
            card = page.locator("#memory")
            await expect(card.locator("#memory-state")).to_have_text(
                "Long-term memory is off: the character forgets everything when a session "
                "ends. To turn it on, set MARIONETTE_MEMORY_LONG_TERM=true and start "
                "Marionette again.",
                timeout=UI_TIMEOUT_MS,
            )
            await expect(card).to_have_attribute("data-state", "unavailable")
            await expect(card.locator("#memory-scope")).to_be_hidden()
            await card.screenshot(path=str(screenshot_path("panel-memory-off.png")))
            await ctx.close()
    assert not (tmp_path / "never.sqlite3").exists()


async def test_the_read_key_may_look_but_not_reset(
    browser: Any, pages_bus: BusSettings, tmp_path: Path
) -> None:
    env = {
        "MARIONETTE_GATEWAY_OPERATOR_KEY": OPERATOR_KEY,
        "MARIONETTE_GATEWAY_READ_KEY": READ_KEY,
        "MARIONETTE_MEMORY_PATH": str(tmp_path / "keyed.sqlite3"),
    }
    with pytest.MonkeyPatch.context() as patch:
        async with running_gateway(pages_bus, patch, env) as gateway:
            operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
            async with httpx.AsyncClient(base_url=gateway.url, headers=operator) as client:
                await seed(client, ADA, SEED[:2])
                ctx = await browser.new_context(viewport={"width": 1440, "height": 900},
                                                accept_downloads=True)  # fmt: skip
                page = await ctx.new_page()
                await page.goto(f"{gateway.url}/?key={READ_KEY}")
                card = page.locator("#memory")
                ada = card.locator(f"li[data-scope='{ADA}']")
                await ada.locator("button").click()  # listed and opened with the read key
                await expect(card.locator("#memory-items .memory-text")).to_have_count(
                    2, timeout=UI_TIMEOUT_MS
                )
                async with page.expect_download() as downloading:  # export is a read
                    await card.locator("#memory-export").click()
                assert (await downloading.value).suggested_filename.endswith(".json")
                await card.locator("#memory-reset").click()
                await page.locator("#memory-confirm-yes").click()
                await expect(card.locator("#memory-note")).to_have_text(
                    "Not allowed with this key (see above).", timeout=UI_TIMEOUT_MS
                )
                await expect(page.locator("#alerts")).to_contain_text("This key may only watch.")
                assert len(await texts(client, ADA)) == 2
                await ctx.close()
            await close_long_term(gateway)
