"""Fixtures shared by the integration tests."""

from collections.abc import AsyncIterator

import pytest

from services.bus import BusSettings
from tests.integration.gateway_fixtures import RunningGateway, running_gateway


@pytest.fixture
async def gateway(
    bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningGateway]:
    """A real gateway (uvicorn on a free port, no key) on the test's Redis."""
    async with running_gateway(bus_settings, monkeypatch) as running:
        yield running
