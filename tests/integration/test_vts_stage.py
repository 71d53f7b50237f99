"""The vts stage against a stand-in of VTube Studio's API (tests/standins/vts.py), with the
real avatar and playback stages on real Redis: the model's mouth moves with the reply's
audio, its expression follows the mapping, a pause shuts the mouth at once, and a VTube
Studio that restarts is found again."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts import AvatarExpr, Pause, PlaybackProgress
from contracts.topics import AVATAR_EXPR, PLAYBACK_PROGRESS
from services.bus import Bus, BusSettings, StageRuntime
from services.vts.mapping import load_mapping
from services.vts.settings import VtsSettings
from services.vts.stage import VtsStage
from tests.helpers import read_topic, wait_until
from tests.integration.stream_tools import chunk, control, speaking_stages
from tests.standins.vts import VtsStandIn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MAPPING = """
[expressions.happy]
hotkey = "Smile"
mouth_form = 0.9
"""


@pytest.fixture
async def vts() -> AsyncIterator[VtsStandIn]:
    async with VtsStandIn() as standin:
        yield standin


def vts_runtime(
    vts: VtsStandIn, bus_settings: BusSettings, tmp_path: Path
) -> StageRuntime[VtsStage]:
    mapping_file = tmp_path / "vts-mapping.toml"
    mapping_file.write_text(MAPPING)
    settings = VtsSettings(url=vts.url, token_file=tmp_path / "vts-token",
                           mapping_file=mapping_file, reconnect_max_s=1)  # fmt: skip

    async def build(bus: Bus) -> VtsStage:
        stage = VtsStage(settings, bus, load_mapping(settings.mapping_file))
        await stage.connect()
        return stage

    return StageRuntime(VtsStage, bus_settings, build=build)


def mouth(vts: VtsStandIn) -> list[tuple[float, float]]:
    return [(at, values["MouthOpen"]) for at, values in vts.injections if "MouthOpen" in values]


def is_subsequence(short: list[float], long: list[float]) -> bool:
    rest = iter(long)
    return all(any(value == other for other in rest) for value in short)


async def test_the_mouth_follows_the_reply_in_order_and_in_time(
    vts: VtsStandIn, bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    async with (
        speaking_stages(bus_settings, tmp_path) as out,
        vts_runtime(vts, bus_settings, tmp_path),
    ):
        assert vts.token_requests == 1
        assert (tmp_path / "vts-token").exists()
        await out.publish(chunk("r1", 0, "Hello chat, welcome back!", 1.0, final=False))
        await out.publish(chunk("r1", 1, "Let us build a robot.", 1.0, final=True))

        async def finished() -> bool:
            reports = await read_topic(redis_client, PLAYBACK_PROGRESS, bus_settings.partitions)
            return any(isinstance(r, PlaybackProgress) and r.state == "finished" for r in reports)

        await wait_until(finished, timeout_s=30, what="the reply to play")
        await wait_until(lambda: _quiet(vts), timeout_s=10, what="the injections to stop")
        exprs = await read_topic(redis_client, AVATAR_EXPR, bus_settings.partitions)

    track = [v for e in exprs if isinstance(e, AvatarExpr) and e.state == "speaking"
             for v in e.mouth_open]  # fmt: skip
    values = mouth(vts)
    moving = [(at, value) for at, value in values if value > 0]
    assert moving, "the mouth never moved"
    # In order: what VTube Studio got is the track, frame by frame, never out of order.
    assert is_subsequence([value for _, value in moving], [v for v in track if v > 0])
    # In time: it moved for about as long as the audio played (2 s), not all at once.
    span = moving[-1][0] - moving[0][0]
    assert 1.5 < span < 2.5, span
    assert len({value for _, value in moving}) > 10  # a track, not a constant
    # Then shut: the last values are zeros, and the form follows the mapping while speaking.
    assert values[-1][1] == 0.0
    assert all(v.get("MouthSmile") == 0.9 for _, v in vts.injections if v.get("MouthOpen"))
    # The expression: happy is the Smile hotkey, triggered before the mouth first moved.
    smile = vts.hotkey_id("Smile")
    triggered = [at for at, hotkey in vts.hotkeys_triggered if hotkey == smile]
    assert triggered
    assert triggered[0] <= moving[0][0] + 0.05


async def _quiet(vts: VtsStandIn) -> bool:
    """Nothing injected for the last 1.5 s (the mouth rests, VTube Studio takes over)."""
    return bool(vts.injections) and time.monotonic() - vts.injections[-1][0] > 1.5


async def test_a_pause_shuts_the_mouth_at_once_and_it_opens_again_after(
    vts: VtsStandIn, bus_settings: BusSettings, tmp_path: Path
) -> None:
    async with (
        speaking_stages(bus_settings, tmp_path) as out,
        vts_runtime(vts, bus_settings, tmp_path),
    ):
        await out.publish(chunk("r2", 0, "A long sentence to talk over.", 4.0, final=True))

        async def moving() -> bool:
            return any(value > 0 for _, value in mouth(vts))

        await wait_until(moving, timeout_s=20, what="the mouth to move")
        paused_at = time.monotonic()
        await out.publish(control(Pause(target_turn_id="r2"), 1))

        async def shut() -> bool:
            return any(at > paused_at and value == 0.0 for at, value in mouth(vts))

        await wait_until(shut, timeout_s=5, what="the mouth to shut")
        shut_at = next(at for at, value in mouth(vts) if at > paused_at and value == 0.0)
        print(f"\npause -> mouth at zero: {(shut_at - paused_at) * 1000:.1f} ms")
        held_from = len(mouth(vts))
        await asyncio.sleep(0.8)  # playback holds the audio meanwhile
        assert all(value == 0.0 for _, value in mouth(vts)[held_from:]), "moved while paused"

        await out.publish(control(Pause(target_turn_id="r2", paused=False), 2))

        async def again() -> bool:
            return any(value > 0 for _, value in mouth(vts)[held_from:])

        await wait_until(again, timeout_s=10, what="the mouth to move again after the pause")


async def test_a_restarted_vts_is_found_again_with_the_saved_token(
    vts: VtsStandIn, bus_settings: BusSettings, tmp_path: Path
) -> None:
    async with (
        speaking_stages(bus_settings, tmp_path) as out,
        vts_runtime(vts, bus_settings, tmp_path) as runtime,
    ):
        stage = runtime.stage
        await vts.stop()
        await wait_until(lambda: _state(stage, "connecting", "unreachable"), timeout_s=10,
                         what="the stage to notice")  # fmt: skip
        await vts.start()
        await wait_until(lambda: _state(stage, "connected"), timeout_s=15, what="a reconnection")
        assert vts.token_requests == 1, "the saved token was used, the user not asked again"
        before = len(vts.injections)
        await out.publish(chunk("r3", 0, "I am back.", 1.0, final=True))

        async def moved() -> bool:
            return any(v.get("MouthOpen", 0) > 0 for _, v in vts.injections[before:])

        await wait_until(moved, timeout_s=20, what="the mouth to move after the restart")


async def _state(stage: VtsStage, *states: str) -> bool:
    return stage.status()["connection"] in states
