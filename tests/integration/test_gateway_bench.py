"""benchmarks.gateway_latency in a tiny configuration, without the LLM: it runs to the end,
loses nothing, and its figures are positive numbers. No timing is asserted."""

import math

import pytest

from benchmarks.gateway_latency import FanoutResult, Spread, as_json, fanout, overhead
from services.bus import BusSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def positive(spread: Spread, n: int) -> None:
    assert spread.n == n
    for value in (spread.p50, spread.p95, spread.p99, spread.mean, spread.max):
        assert math.isfinite(value), spread
        assert value > 0, spread
    assert spread.p50 <= spread.p99 <= spread.max


async def test_the_overhead_part_times_both_paths(bus_settings: BusSettings) -> None:
    result = await overhead(bus_settings, samples=20, warmup=2)
    positive(result.http, 20)
    positive(result.bus, 20)
    positive(result.floor, 20)
    assert result.entries == 2 * 22  # every chat line of both paths reached Redis
    assert math.isfinite(result.added_p50_ms)


async def test_the_fanout_part_delivers_every_message_to_every_client(
    bus_settings: BusSettings,
) -> None:
    direct, gateway = await fanout(bus_settings, clients=3, messages=50, rate=100)

    def complete(result: FanoutResult, readers: int) -> None:
        assert result.readers == readers
        assert result.lost == 0
        assert result.duplicates == 0
        assert result.delivered == readers * 50
        assert result.publish_rate > 0
        assert result.delivered_per_s > 0
        positive(result.delay, readers * 50)

    complete(direct, 1)
    complete(gateway, 3)
    assert gateway.skew.n == 50
    figures = as_json({"fanout": (direct, gateway)})
    assert figures["fanout"]["gateway"]["lost"] == 0
