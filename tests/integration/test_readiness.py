"""/readyz and /healthz of a stage process, as Kubernetes and compose probe them."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from contracts import ChatMessage
from contracts.topics import CHAT_MESSAGE
from services.bus import BusSettings, Stage, StageRuntime, consumes
from services.bus.redis_server import free_port
from services.telemetry import metrics
from services.telemetry.health import BOARD

pytestmark = pytest.mark.integration


class Listener(Stage):
    name = "listener"

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, chat: ChatMessage) -> None:
        pass


def probe(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def metrics_page(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return bytes(reply.read())


async def test_ready_once_serving_with_its_partitions_and_not_after_it_stops(
    bus_settings: BusSettings,
) -> None:
    port = free_port()
    assert metrics.serve_metrics(port, "127.0.0.1")
    for leftover in list(BOARD.sources):  # a runtime another test did not stop
        BOARD.unwatch(leftover)
    code, body = await asyncio.to_thread(probe, port, "/readyz")
    assert code == 503
    assert "no stage" in str(body["why"])

    runtime = StageRuntime(Listener, bus_settings)
    await runtime.prepare()  # built, not yet serving: a spare on standby
    code, body = await asyncio.to_thread(probe, port, "/readyz")
    assert code == 503
    assert "not serving" in str(body["why"]), body
    await runtime.serve()
    code, body = await asyncio.to_thread(probe, port, "/readyz")
    assert code == 200, body
    assert body["stage"] == "listener"
    assert body["redis"] is True
    assert body["partitions_held"] == list(range(bus_settings.partitions))
    assert await asyncio.to_thread(probe, port, "/healthz") == (200, {"alive": True})

    await runtime.stop()
    code, body = await asyncio.to_thread(probe, port, "/readyz")
    assert code == 503, "a stopped stage takes no work"
    # /metrics is still served beside them.
    assert b"marionette_" in await asyncio.to_thread(metrics_page, port)
