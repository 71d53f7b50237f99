"""The obs stage against a stand-in of obs-websocket v5 (tests/standins/obs.py), with the
real avatar and playback stages on real Redis: a reply switches to the talking scene,
captions follow the words as they are heard, then the scene goes back; panic mutes, shows
BRB and stops the reply; an OBS that restarts is found again; a wrong password names the
setting."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts import Panic, PlaybackProgress
from contracts.control import SceneSwitch
from contracts.topics import PLAYBACK_PROGRESS
from services.bus import Bus, BusSettings, StageRuntime
from services.bus.presence import replicas_seen
from services.errors import StageStartError
from services.obs.settings import ObsSettings
from services.obs.stage import ObsStage
from tests.helpers import read_topic, wait_until
from tests.integration.stream_tools import chunk, control, speaking_stages
from tests.standins.obs import ObsStandIn, Recorded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FIRST, SECOND = "Hello chat, welcome back to the stream!", "Today we build a robot."


@pytest.fixture
async def obs() -> AsyncIterator[ObsStandIn]:
    async with ObsStandIn(password="secret") as standin:
        yield standin


def settings_for(obs: ObsStandIn, **changes: object) -> ObsSettings:
    return ObsSettings(url=obs.url, password="secret", talking_scene="Talking", brb_scene="BRB",
                       caption_source="Captions", audio_source="Character Audio",
                       speaking_filter_source="Character", speaking_filter="Glow",
                       idle_after_s=0.3, reconnect_max_s=1, **changes)  # type: ignore[arg-type]  # fmt: skip


def obs_runtime(obs: ObsStandIn, bus_settings: BusSettings) -> StageRuntime[ObsStage]:
    async def build(bus: Bus) -> ObsStage:
        stage = ObsStage(settings_for(obs), bus)
        await stage.connect()
        return stage

    return StageRuntime(ObsStage, bus_settings, build=build)


def asked(obs: ObsStandIn, kind: str, since: float = 0.0) -> list[Recorded]:
    return [r for r in obs.requests if r.request_type == kind and r.at >= since]


def captions(obs: ObsStandIn) -> list[str]:
    return [r.request_data["inputSettings"]["text"] for r in asked(obs, "SetInputSettings")]


async def progress_states(redis_client: Redis, bus_settings: BusSettings, turn: str) -> list[str]:
    reports = await read_topic(redis_client, PLAYBACK_PROGRESS, bus_settings.partitions)
    return [r.state for r in reports if isinstance(r, PlaybackProgress) and r.turn_id == turn]


async def test_a_reply_drives_scene_captions_and_filter_in_order(
    obs: ObsStandIn, bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    async with (
        speaking_stages(bus_settings, tmp_path) as out,
        obs_runtime(obs, bus_settings),
    ):
        assert obs.program_scene == "Main"
        await out.publish(chunk("r1", 0, FIRST, 1.5, final=False))
        await out.publish(chunk("r1", 1, SECOND, 1.0, final=True))

        async def back_to_main() -> bool:
            return bool(asked(obs, "SetCurrentProgramScene")) and obs.program_scene == "Main"

        await wait_until(back_to_main, timeout_s=30, what="the scene to go back after the reply")
        finished = (await progress_states(redis_client, bus_settings, "r1"))[-1]
        await wait_until(lambda: _cleared(obs), timeout_s=10, what="the caption to clear")

    assert finished == "finished"
    scenes = [r.request_data["sceneName"] for r in asked(obs, "SetCurrentProgramScene")]
    assert scenes == ["Talking", "Main"]
    talking_at = asked(obs, "SetCurrentProgramScene")[0].at
    main_at = asked(obs, "SetCurrentProgramScene")[1].at
    assert 2.0 < main_at - talking_at < 4.5  # the reply's 2.5 s (+ idle_after_s), not at once
    shown = captions(obs)
    # Words appear as they are heard: each caption grows the last, up to the whole sentence.
    first = [c for c in shown if c and FIRST.startswith(c)]
    assert len(first) >= 3
    assert first == sorted(first, key=len)
    assert first[-1] == FIRST
    assert SECOND in shown
    assert shown.index(SECOND) > shown.index(FIRST)
    assert shown[-1] == ""
    assert asked(obs, "SetInputSettings")[0].at >= talking_at - 0.2
    glow = [r.request_data["filterEnabled"] for r in asked(obs, "SetSourceFilterEnabled")]
    assert glow == [True, False]
    assert obs.filters[("Character", "Glow")] is False


async def _cleared(obs: ObsStandIn) -> bool:
    shown = captions(obs)
    return bool(shown) and shown[-1] == ""


async def test_panic_mutes_shows_brb_and_stops_the_reply_then_lifts(
    obs: ObsStandIn, bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    async with (
        speaking_stages(bus_settings, tmp_path) as out,
        obs_runtime(obs, bus_settings),
    ):
        await out.publish(chunk("r2", 0, "A long reply that will be cut short.", 5.0, final=True))
        await wait_until(lambda: _on(obs, "Talking"), timeout_s=20, what="the talking scene")
        await out.publish(control(Panic(), 1))

        async def panicked() -> bool:
            states = await progress_states(redis_client, bus_settings, "r2")
            muted = obs.input_state["Character Audio"].muted
            return muted and obs.program_scene == "BRB" and "flushed" in states

        await wait_until(panicked, timeout_s=10, what="mute + BRB + the reply stopped")
        assert captions(obs)[-1] == ""
        mute = asked(obs, "SetInputMute")[0]
        brb = [
            r for r in asked(obs, "SetCurrentProgramScene") if r.request_data["sceneName"] == "BRB"
        ]
        assert mute.request_data == {"inputName": "Character Audio", "inputMuted": True}
        assert mute.at <= brb[0].at  # silence first, then the card

        await out.publish(control(Panic(engaged=False), 2))

        async def lifted() -> bool:
            return not obs.input_state["Character Audio"].muted and obs.program_scene == "Main"

        await wait_until(lifted, timeout_s=10, what="unmuted, and back to the scene before")
        await asyncio.sleep(1.0)  # the cut reply is over: it does not bring Talking back
        assert obs.program_scene == "Main"


async def _on(obs: ObsStandIn, scene: str) -> bool:
    return obs.program_scene == scene


async def test_a_restarted_obs_is_found_again_and_status_says_so(
    obs: ObsStandIn, bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    async def detail() -> dict[str, object]:
        seen = [r for r in await replicas_seen(redis_client) if r.stage == "obs"]
        return (seen[0].detail or {}) if seen else {}

    async def connection(*states: str) -> bool:
        return (await detail()).get("connection") in states

    async with (
        speaking_stages(bus_settings, tmp_path) as out,
        obs_runtime(obs, bus_settings),
    ):
        await wait_until(lambda: connection("connected"), timeout_s=10, what="status")
        assert (await detail())["scenes"] == ["Main", "Talking", "BRB"]
        assert (await detail())["muted"] is False
        await obs.stop()
        await wait_until(lambda: connection("connecting", "unreachable"), timeout_s=10,
                         what="status to say OBS is away")  # fmt: skip
        await obs.start()
        await wait_until(lambda: connection("connected"), timeout_s=15, what="a reconnection")
        await out.publish(control(SceneSwitch(scene="BRB"), 1))
        await wait_until(lambda: _on(obs, "BRB"), timeout_s=10, what="a scene switch after it")


async def test_a_wrong_password_stops_the_start_naming_the_setting(
    obs: ObsStandIn, bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARIONETTE_OBS_URL", obs.url)
    monkeypatch.setenv("MARIONETTE_OBS_PASSWORD", "wrong")
    with pytest.raises(StageStartError, match="MARIONETTE_OBS_PASSWORD"):
        async with StageRuntime(ObsStage, bus_settings):
            pass
