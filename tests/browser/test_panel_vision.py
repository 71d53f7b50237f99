"""The panel's "Show the character a picture" card in a real Chromium, on a real gateway
and Redis: a picture file chosen, and a snapshot from a camera (Chromium's fake camera,
playing a real photo), each looked at by the gateway and published as vision.observation.

The photos are scikit-image's (tests/vision_photos.py). The panel shrinks a picture to a
small JPEG before sending it, so the 780 KB astronaut PNG passes the gateway's default
64 KB body limit. Screenshots go to tests/browser/screenshots/.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import pytest
from redis.asyncio import Redis

from contracts.topics import VISION_OBSERVATION
from contracts.vision import VisionObservation
from services.bus import BusSettings
from tests.browser.conftest import CHROMIUM_ARGS, page_errors, screenshot_path
from tests.helpers import read_topic
from tests.integration.gateway_fixtures import RunningGateway
from tests.vision_photos import photo, photo_path

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

UI_TIMEOUT_MS = 15_000
TIMES = "\N{MULTIPLICATION SIGN}"  # the card writes a size as 640 TIMES 480


@pytest.fixture
async def client(pages_bus: BusSettings) -> AsyncIterator[Redis]:
    redis = Redis.from_url(str(pages_bus.redis_url))
    yield redis
    await redis.aclose()


async def observed(client: Redis, bus: BusSettings, session: str) -> list[VisionObservation]:
    found = await read_topic(client, VISION_OBSERVATION, bus.partitions)
    return [m for m in found if isinstance(m, VisionObservation) and m.session_id == session]


async def test_a_chosen_picture_is_described_with_its_labels_and_time(
    browser: Any, pages_gateway: RunningGateway, pages_bus: BusSettings, client: Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await ctx.new_page()
    errors = page_errors(page)
    await page.goto(f"{pages_gateway.url}/?session=vision-show")
    card = page.locator("#vision")
    await expect(card.locator("#vision-seen")).to_be_hidden()

    await card.locator("#vision-file").set_input_files(str(photo_path("astronaut.png")))
    await expect(card.locator("#vision-description")).to_contain_text(
        "I see a face; the picture is bright", timeout=UI_TIMEOUT_MS
    )
    labels = await card.locator(".vision-label").all_inner_texts()
    assert [" ".join(text.split()[:2]) for text in labels] == ["1 face"]
    assert "% sure" in labels[0]  # for screen readers (and on hover)
    await expect(card.locator("#vision-when")).not_to_be_empty()
    await expect(card.locator("#vision-note")).to_have_attribute("data-kind", "ok")
    # The panel sent a JPEG of at most 640 px: the gateway saw 512x512, the photo's size.
    await expect(card.locator("#vision-size")).to_contain_text(f"512{TIMES}512")
    published = await observed(client, pages_bus, "vision-show")
    assert [(o.source, o.objects[0].label, o.objects[0].count) for o in published] == [
        ("panel", "face", 1)
    ]
    assert await card.get_attribute("data-seen") == published[0].message_id
    for name, options in (
        ("panel-vision.png", {}),
        ("panel-vision-dark.png", {"color_scheme": "dark"}),
    ):
        await page.emulate_media(**options)
        await card.screenshot(path=str(screenshot_path(name)))
    await page.emulate_media(color_scheme="light")
    await page.screenshot(path=str(screenshot_path("panel-vision-1440x900.png")), full_page=True)

    # The cat, then something that is not a picture at all.
    await card.locator("#vision-file").set_input_files(str(photo_path("chelsea.png")))
    await expect(card.locator("#vision-description")).to_contain_text(
        "I see a cat", timeout=UI_TIMEOUT_MS
    )
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("these are words, not pixels")
    await card.locator("#vision-file").set_input_files(str(not_a_picture))
    await expect(card.locator("#vision-note")).to_have_text(
        "notes.png is not a picture this browser can open."
    )
    await expect(card.locator("#vision-note")).to_have_attribute("data-kind", "error")
    assert len(await observed(client, pages_bus, "vision-show")) == 2
    assert errors == []
    await ctx.close()


async def test_on_a_phone_the_card_fits_the_screen(
    browser: Any, pages_gateway: RunningGateway
) -> None:
    ctx = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                    device_scale_factor=2)  # fmt: skip
    page = await ctx.new_page()
    await page.goto(f"{pages_gateway.url}/?session=vision-phone")
    card = page.locator("#vision")
    await card.locator("#vision-file").set_input_files(str(photo_path("astronaut.png")))
    await expect(card.locator("#vision-description")).to_contain_text(
        "I see a face", timeout=UI_TIMEOUT_MS
    )
    box = await card.bounding_box()
    assert box is not None
    assert box["width"] <= 390
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 390  # nothing sticks out sideways
    await card.screenshot(path=str(screenshot_path("panel-vision-390.png")))
    await ctx.close()


def fake_camera_video(path: Path) -> Path:
    """The astronaut as a Y4M video, the format Chromium's fake camera plays."""
    frame = cv2.resize(photo("astronaut.png"), (640, 480))  # a webcam's size
    planes = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
    path.write_bytes(b"YUV4MPEG2 W640 H480 F5:1 Ip A1:1 C420jpeg\nFRAME\n" + planes.tobytes())
    return path


async def test_a_snapshot_from_the_camera_is_described(
    chromium: Path, pages_gateway: RunningGateway, pages_bus: BusSettings, client: Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    video = fake_camera_video(tmp_path / "astronaut.y4m")
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium),
            args=[*CHROMIUM_ARGS, "--use-fake-device-for-media-stream",
                  "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={video}"],
        )  # fmt: skip
        ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
        page = await ctx.new_page()
        errors = page_errors(page)
        await page.goto(f"{pages_gateway.url}/?session=vision-camera")
        card = page.locator("#vision")
        await card.locator("#vision-camera").click()
        await expect(card.locator("#vision-live")).to_be_visible()
        await page.wait_for_function(
            "document.getElementById('vision-video').videoWidth > 0", timeout=UI_TIMEOUT_MS
        )
        await card.screenshot(path=str(screenshot_path("panel-vision-camera.png")))
        await card.locator("#vision-snap").click()
        await expect(card.locator("#vision-description")).to_contain_text(
            "I see a face", timeout=UI_TIMEOUT_MS
        )
        await expect(card.locator("#vision-size")).to_contain_text(f"640{TIMES}480")
        await card.locator("#vision-stop").click()
        await expect(card.locator("#vision-live")).to_be_hidden()
        await expect(card.locator("#vision-camera")).to_be_visible()
        assert errors == []
        await browser.close()
    published = await observed(client, pages_bus, "vision-camera")
    assert [(o.source, o.width, o.height) for o in published] == [("panel", 640, 480)]
