"""A real gateway (uvicorn on a free port) on the test Redis, for the gateway tests."""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from services.bus import BusSettings, StageRuntime
from services.gateway.stage import GatewayStage

OPERATOR_KEY = "operator-key-0123456789"
READ_KEY = "read-only-key-0123456789"


@dataclass
class RunningGateway:
    url: str
    runtime: StageRuntime[GatewayStage]

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://")


@asynccontextmanager
async def running_gateway(
    bus: BusSettings,
    monkeypatch: pytest.MonkeyPatch,
    env: Mapping[str, str] | None = None,
    replica_id: str | None = None,
) -> AsyncIterator[RunningGateway]:
    monkeypatch.setenv("MARIONETTE_GATEWAY_PORT", "0")
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    async with StageRuntime(GatewayStage, bus, replica_id=replica_id) as runtime:
        await runtime.stage.listening.wait()
        yield RunningGateway(runtime.stage.url, runtime)
