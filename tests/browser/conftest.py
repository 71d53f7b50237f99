"""Real Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the pages' tests,
and a gateway on the test Redis for them to talk to.

- `browser`: one headless Chromium for the whole test session (a page per test: open a
  context with `browser.new_context(...)`). Skipped when Chromium or Playwright is missing
  (`MARIONETTE_CHROMIUM` names another binary).
- `pages_bus`, `pages_gateway`: the module's Redis (emptied once) and a real gateway on it
  (uvicorn on a free port, no keys), shared by a module's tests.
- `page_errors(page)`: collects the page's uncaught errors and console errors, so a test
  can assert there were none.
- `SCREENSHOTS`: where tests save what they looked like (git-ignored).
"""

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from services.bus import BusSettings, load_bus_settings
from tests.integration.gateway_fixtures import RunningGateway, running_gateway

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path(os.environ.get("MARIONETTE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    # OBS plays a browser source's sound without a click; so must the tests' Chromium.
    "--autoplay-policy=no-user-gesture-required",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt install chromium, or set MARIONETTE_CHROMIUM)")
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: Path) -> "AsyncIterator[Browser]":
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    async with async_playwright() as playwright:
        # Playwright's own browsers cannot be downloaded here: the system's Chromium.
        launched = await playwright.chromium.launch(executable_path=str(chromium),
                                                    args=CHROMIUM_ARGS)  # fmt: skip
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
def pages_bus(redis_server_url: str) -> BusSettings:
    """The module's Redis, emptied once (its tests use sessions of their own)."""
    with redis.Redis.from_url(redis_server_url) as client:
        client.flushall()
    return load_bus_settings(redis_url=redis_server_url, partitions=2)


@pytest.fixture(scope="module")
async def pages_gateway(pages_bus: BusSettings) -> AsyncIterator[RunningGateway]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MARIONETTE_GATEWAY_OPERATOR_KEY", raising=False)
        patch.delenv("MARIONETTE_GATEWAY_READ_KEY", raising=False)
        async with running_gateway(pages_bus, patch) as running:
            yield running


def page_errors(page: "Page") -> list[str]:
    """The page's uncaught errors and console errors from now on (a list that fills up)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("console", lambda message: errors.append(f"console: {message.text}")
            if message.type == "error" else None)  # fmt: skip
    return errors


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / name
