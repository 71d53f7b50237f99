"""benchmarks.vts_mouth in a tiny configuration: it runs to the end, every frame of the
track reaches the VTube Studio stand-in, a pause shuts the mouth, and the figures are real
numbers. No timing is asserted."""

import math

import pytest

from benchmarks.vts_mouth import run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_the_benchmark_times_every_frame_and_the_pause() -> None:
    result = await run(replies=1, pauses=1)
    assert result.frames_missed == 0
    assert result.error_ms.n == 90  # every frame of the 3 s, 30 fps reply, once
    assert result.pause_ms.n == 1
    for spread in (result.error_ms, result.tick_floor_ms, result.pause_ms):
        assert math.isfinite(spread.p50)
        assert spread.p50 <= spread.p95 <= spread.max
