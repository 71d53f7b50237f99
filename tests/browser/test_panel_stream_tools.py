"""The panel's Stream tools card in a real Chromium, on a real gateway and Redis.

The obs and vts stages are not run: their heartbeats are written into the presence hash as
services/bus/presence.py writes them (with the `detail` their `status()` gives), so the
card is checked against exactly what /api/status carries. Putting a scene on air must
publish a control message the obs stage would act on. Screenshots go to
tests/browser/screenshots/.
"""

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from contracts import Control
from contracts.control import Command, InputMute, SceneSwitch
from contracts.topics import CONTROL
from services.bus import BusSettings
from services.bus.presence import PRESENCE_KEY
from tests.browser.conftest import page_errors, screenshot_path
from tests.helpers import read_topic, wait_until
from tests.integration.gateway_fixtures import RunningGateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

UI_TIMEOUT_MS = 10_000
OBS_CONNECTED: dict[str, Any] = {
    "connection": "connected", "url": "ws://127.0.0.1:4455", "panic": False,
    "obs_version": "31.0.2", "scene": "Main", "scenes": ["Main", "Talking", "BRB"],
}  # fmt: skip
VTS_CONNECTED: dict[str, Any] = {
    "connection": "connected", "url": "ws://127.0.0.1:8001",
    "model": "Akari", "hotkeys": 7, "expression": "smile",
}  # fmt: skip
REFUSED = "OBS refused the password: set MARIONETTE_OBS_PASSWORD to the one in OBS"


class Beats:
    """Heartbeats of stand-in replicas, rewritten every 0.5 s (a beat older than 6 s would
    read as a dead replica); a test changes `details` to change what they say."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.details: dict[str, dict[str, Any]] = {}  # stage -> its detail
        self.started_at = time.time()

    async def beat(self) -> None:
        for stage, detail in self.details.items():
            body = {"stage": stage, "replica": f"{stage}-test", "host": "test", "pid": os.getpid(),
                    "started_at": self.started_at, "beat_at": time.time(), "starts": 1,
                    "detail": detail}  # fmt: skip
            await self.client.hset(PRESENCE_KEY, f"{stage}/{stage}-test", json.dumps(body))

    async def run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(0.5)


@asynccontextmanager
async def beating(client: Redis, details: dict[str, dict[str, Any]]) -> AsyncIterator[Beats]:
    beats = Beats(client)
    beats.details = details
    await beats.beat()
    task = asyncio.create_task(beats.run())
    try:
        yield beats
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.hdel(PRESENCE_KEY, *(f"{s}/{s}-test" for s in details))


@pytest.fixture
async def client(pages_bus: BusSettings) -> AsyncIterator[Redis]:
    redis = Redis.from_url(str(pages_bus.redis_url))
    yield redis
    await redis.aclose()


async def sent(client: Redis, bus: BusSettings, kind: str) -> list[Command]:
    """The commands of that kind published on the control stream so far."""
    messages = await read_topic(client, CONTROL, bus.partitions)
    return [m.command for m in messages if isinstance(m, Control) and m.command.kind == kind]


def shots() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "panel-stream-tools.png", {"viewport": {"width": 1440, "height": 900}}
    yield "panel-stream-tools-dark.png", {"viewport": {"width": 1440, "height": 900},
                                          "color_scheme": "dark"}  # fmt: skip
    yield "panel-stream-tools-390.png", {"viewport": {"width": 390, "height": 844},
                                         "is_mobile": True, "device_scale_factor": 2}  # fmt: skip


async def test_without_obs_or_vts_the_card_says_how_to_set_them_up(
    browser: Any, pages_gateway: RunningGateway
) -> None:
    ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await ctx.new_page()
    errors = page_errors(page)
    await page.goto(f"{pages_gateway.url}/")
    await page.wait_for_selector("body[data-status-at]", timeout=UI_TIMEOUT_MS)
    card = page.locator("#stream-tools")
    await expect(card.locator("#stream-tools-empty")).to_be_visible()
    await expect(card.locator("#stream-tools-empty")).to_contain_text("MARIONETTE_OBS_URL")
    await expect(card.locator("#stream-tools-empty")).to_contain_text("docs/vts.md")
    await expect(card.locator("#obs-tool")).to_be_hidden()
    await expect(card.locator("#vts-tool")).to_be_hidden()
    path = screenshot_path("panel-stream-tools-empty.png")
    await card.screenshot(path=str(path))
    print(f"\nscreenshot: {path}")
    await ctx.close()
    assert errors == [], "the page had errors"


async def test_the_card_shows_obs_and_vts_and_puts_a_scene_on_air(
    browser: Any, pages_gateway: RunningGateway, pages_bus: BusSettings, client: Redis
) -> None:
    details = {"obs": dict(OBS_CONNECTED), "vts": dict(VTS_CONNECTED)}
    async with beating(client, details) as beats:
        ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
        page = await ctx.new_page()
        errors = page_errors(page)
        await page.goto(f"{pages_gateway.url}/")
        card = page.locator("#stream-tools")
        obs = card.locator("#obs-tool")
        await expect(obs.locator(".tool-state")).to_have_text("connected", timeout=UI_TIMEOUT_MS)
        await expect(obs.locator(".tool-state")).to_have_attribute("data-tone", "ok")
        await expect(card.locator("#stream-tools-empty")).to_be_hidden()
        await expect(obs.locator("#obs-state")).to_contain_text("OBS 31.0.2")
        await expect(obs.locator("#obs-problem")).to_be_hidden()
        await expect(obs.locator(".on-air-scene")).to_have_text("Main")
        scenes = obs.locator("li.scene")
        await expect(scenes.locator(".scene-name")).to_have_text(["Main", "Talking", "BRB"])
        main = scenes.filter(has_text="Main")
        await expect(main).to_have_attribute("data-on-air", "true")
        await expect(main.locator("button")).to_be_disabled()
        await expect(main.locator("button")).to_have_text("On air")
        await expect(scenes.filter(has_text="BRB").locator("button")).to_have_text("Put on air")
        await expect(obs.locator("#obs-mute")).to_have_text("Mute character")
        vts = card.locator("#vts-tool")
        await expect(vts.locator(".tool-state")).to_have_text("connected")
        await expect(vts.locator("dd[data-fact=model]")).to_have_text("Akari")
        await expect(vts.locator("dd[data-fact=hotkeys]")).to_have_text("7")
        await expect(vts.locator("dd[data-fact=expression]")).to_have_text("smile")
        # The stages card says it briefly too.
        stage = page.locator("li.stage[data-stage=obs] .stage-detail")
        await expect(stage).to_contain_text("OBS: connected")

        for name, options in shots():
            shot = await browser.new_context(**options)
            shown = await shot.new_page()
            await shown.goto(f"{pages_gateway.url}/")
            on_air = shown.locator("#stream-tools li.scene[data-on-air=true]")
            await expect(on_air).to_have_count(1, timeout=UI_TIMEOUT_MS)
            await shown.wait_for_timeout(200)
            path = screenshot_path(name)
            await shown.locator("#stream-tools").screenshot(path=str(path))
            print(f"\nscreenshot: {path}")
            if name == "panel-stream-tools.png":  # where the card sits among the others
                whole = screenshot_path("panel-stream-tools-page.png")
                await shown.screenshot(path=str(whole), full_page=True)
                print(f"screenshot: {whole}")
            overflow = await shown.evaluate("document.documentElement.scrollWidth - innerWidth")
            assert overflow <= 0, f"{name}: {overflow} px wider than the screen"
            await shot.close()

        # "Put on air" on Talking: one control message for the obs stage.
        await scenes.filter(has_text="Talking").locator("button").click()
        await expect(card.locator("#stream-tools-note")).to_have_text(
            "Sent: “Talking” goes on air."
        )

        async def switched() -> bool:
            return bool(await sent(client, pages_bus, "scene"))

        await wait_until(switched, 5, "a scene command on the control stream")
        [command] = await sent(client, pages_bus, "scene")
        assert isinstance(command, SceneSwitch)
        assert command.scene == "Talking"

        # The stage says OBS switched: the mark follows.
        beats.details["obs"] = {**OBS_CONNECTED, "scene": "Talking"}
        talking = scenes.filter(has_text="Talking")
        await expect(talking).to_have_attribute("data-on-air", "true", timeout=UI_TIMEOUT_MS)
        await expect(main).to_have_attribute("data-on-air", "false")
        await expect(main.locator("button")).to_be_enabled()

        # Mute: a control message, and the toggle says what it will do next.
        await obs.locator("#obs-mute").click()
        await expect(obs.locator("#obs-mute")).to_have_text("Unmute character")

        async def muted() -> bool:
            return bool(await sent(client, pages_bus, "input_mute"))

        await wait_until(muted, 5, "a mute command on the control stream")
        [mute] = await sent(client, pages_bus, "input_mute")
        assert isinstance(mute, InputMute)
        assert (mute.muted, mute.input) == (True, None)  # None: the character's audio
        path = screenshot_path("panel-stream-tools-muted.png")
        await card.screenshot(path=str(path))
        print(f"\nscreenshot: {path}")

        # OBS refuses the password: the word and the problem, and no scenes to click.
        beats.details["obs"] = {"connection": "password refused", "url": OBS_CONNECTED["url"],
                                "panic": False, "problem": REFUSED}  # fmt: skip
        await expect(obs.locator(".tool-state")).to_have_text("password refused",
                                                              timeout=UI_TIMEOUT_MS)  # fmt: skip
        await expect(obs.locator(".tool-state")).to_have_attribute("data-tone", "bad")
        await expect(obs.locator("#obs-problem")).to_have_text(REFUSED)
        await expect(obs.locator("#obs-problem")).to_be_visible()
        await expect(scenes).to_have_count(0)
        await expect(obs.locator("#obs-on-air")).to_be_hidden()
        await expect(obs.locator("#obs-mute")).to_be_hidden()
        await expect(stage).to_contain_text("OBS: password refused")
        path = screenshot_path("panel-stream-tools-refused.png")
        await card.screenshot(path=str(path))
        print(f"\nscreenshot: {path}")
        await page.emulate_media(color_scheme="dark")
        path = screenshot_path("panel-stream-tools-refused-dark.png")
        await card.screenshot(path=str(path))
        print(f"screenshot: {path}")
        await ctx.close()
        assert errors == [], "the page had errors"
