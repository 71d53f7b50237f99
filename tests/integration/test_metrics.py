"""/metrics on a real Redis: the backlog gauges follow the stream, counters follow outcomes."""

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from contracts import ChatMessage
from contracts.topics import CHAT_MESSAGE
from services.bus import Bus, BusSettings, Producer, Stage, StageRuntime, consumes
from services.bus.partitions import stream_for
from services.bus.redis_server import free_port
from services.telemetry import metrics
from tests.helpers import viewer_chat, wait_until

pytestmark = pytest.mark.integration


def scrape(text: str | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the registry (or of a /metrics page), by name and labels."""
    from prometheus_client import generate_latest

    page = text if text is not None else generate_latest(metrics.REGISTRY).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def backlog(stage: str, stream: str) -> tuple[float, float]:
    """(lag, pending) of the stage's group on the stream, as /metrics says."""
    samples = scrape()
    labels = frozenset({("stage", stage), ("topic", "chat.message"), ("stream", stream)})
    return (
        samples[("marionette_stream_lag_entries", labels)],
        samples[("marionette_stream_pending_entries", labels)],
    )


class SlowReader(Stage):
    """Holds every message until `release` is set."""

    name = "slow-reader"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.release = asyncio.Event()
        self.handled: list[int] = []

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, chat: ChatMessage) -> None:
        await self.release.wait()
        self.handled.append(chat.seq)


async def test_lag_and_pending_follow_the_messages_waiting_for_a_stage(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    # Leases long enough that a loaded machine's late renewal does not move the partition
    # (and its held messages) mid-test: this test is about the figures, not about leases.
    bus_settings = bus_settings.model_copy(update={"lease_ms": 5000})
    stream = stream_for(CHAT_MESSAGE, "s1", bus_settings.partitions)
    first = StageRuntime(SlowReader, bus_settings)
    async with first:

        async def groups_made() -> bool:
            return all([await redis_client.exists(s) for _, s in first.consumed_streams()])

        await wait_until(groups_made, what="the reader's groups")
    # The reader is stopped now, as if it had crashed; it still says which streams are its own.
    metrics.watch(first)
    try:
        async with Producer(bus_settings, "chat-source", [CHAT_MESSAGE]) as source:
            for seq in range(3):
                await source.publish(viewer_chat("s1", seq))
        assert backlog("slow-reader", stream) == (3, 0)  # waiting, unread
    finally:
        metrics.unwatch(first)

    async with StageRuntime(SlowReader, bus_settings) as reader:
        await wait_until(
            lambda: asyncio.sleep(0, backlog("slow-reader", stream) == (0, 3)),
            what="the reader holding all three",
        )
        reader.stage.release.set()
        await wait_until(
            lambda: asyncio.sleep(0, len(reader.stage.handled) == 3), what="all handled"
        )
        await wait_until(
            lambda: asyncio.sleep(0, backlog("slow-reader", stream) == (0, 0)),
            what="all acknowledged",
        )
        handled_label = frozenset(
            {("stage", "slow-reader"), ("topic", "chat.message"), ("outcome", "handled")}
        )
        await wait_until(
            lambda: asyncio.sleep(
                0, scrape()[("marionette_consumed_messages_total", handled_label)] == 3
            ),
            what="three handled on /metrics",
        )


class StrictReader(Stage):
    name = "strict-reader"

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, chat: ChatMessage) -> None:
        pass


async def test_a_dead_letter_is_counted_and_served_over_http(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    port = free_port()
    assert metrics.serve_metrics(port, "127.0.0.1")
    stream = stream_for(CHAT_MESSAGE, "s1", bus_settings.partitions)
    async with StageRuntime(StrictReader, bus_settings):
        await redis_client.xadd(stream, {"data": b"not json"})

        def page() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                return str(reply.read().decode())

        dead = (
            "marionette_dead_letter_entries",
            frozenset({("topic", "chat.message")}),
        )

        async def counted() -> bool:
            return scrape(await asyncio.to_thread(page)).get(dead) == 1

        await wait_until(counted, what="the dead letter on /metrics")
        samples = scrape(await asyncio.to_thread(page))
        outcome = frozenset(
            {("stage", "strict-reader"), ("topic", "chat.message"), ("outcome", "dead_letter")}
        )
        assert samples[("marionette_consumed_messages_total", outcome)] == 1
        assert samples[("marionette_redis_up", frozenset({("stage", "strict-reader")}))] == 1
