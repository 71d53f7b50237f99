"""ObsLink (simpleobsws, msgpack) and the obs-websocket stand-in (JSON too), end to end."""

import asyncio
import base64
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from services.obs.link import (
    EVENT_SUBSCRIPTIONS,
    ObsHello,
    ObsLink,
    ObsPasswordError,
    ObsRequestFailed,
    ObsUnavailable,
)
from tests.standins.obs import JSON, ObsStandIn

PASSWORD = "hunter2-stand-in-password"
QUICK_S = 3.0  # a refusal must come this fast; the connect timeouts are far longer


class Events:
    """An on_event handler that keeps what it is given, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Condition()

    async def __call__(self, event_type: str, event_data: dict[str, Any]) -> None:
        async with self._arrived:
            self.seen.append((event_type, event_data))
            self._arrived.notify_all()

    async def wait_for(self, event_type: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((data for kind, data in self.seen if kind == event_type), None)

        async with asyncio.timeout(2), self._arrived:
            await self._arrived.wait_for(lambda: found() is not None)
        data = found()
        assert data is not None
        return data

    def types(self) -> list[str]:
        return [kind for kind, _ in self.seen]


@pytest.fixture
async def obs() -> AsyncIterator[ObsStandIn]:
    async with ObsStandIn(password=PASSWORD) as stand_in:
        yield stand_in


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def link(obs: ObsStandIn, events: Events) -> AsyncIterator[ObsLink]:
    obs_link = ObsLink(obs.url, PASSWORD, on_event=events)
    await obs_link.connect(timeout_s=5)
    yield obs_link
    await obs_link.close()


def types_of(obs: ObsStandIn) -> list[str]:
    return [request.request_type for request in obs.requests]


async def test_connects_and_reads_the_version(obs: ObsStandIn) -> None:
    obs_link = ObsLink(obs.url, PASSWORD)
    try:
        hello = await obs_link.connect(timeout_s=5)
        assert hello == ObsHello(obs_version="31.0.0", websocket_version="5.5.2", rpc_version=1)
        assert obs_link.connected
        assert types_of(obs) == ["GetVersion"]
    finally:
        await obs_link.close()
    assert not obs_link.connected


async def test_subscribes_to_general_config_scenes_inputs_outputs() -> None:
    assert EVENT_SUBSCRIPTIONS == (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6)


async def test_connects_without_a_password_when_obs_asks_none() -> None:
    async with ObsStandIn(password=None) as obs:
        obs_link = ObsLink(obs.url, "")
        try:
            assert (await obs_link.connect(timeout_s=5)).rpc_version == 1
        finally:
            await obs_link.close()


async def test_a_wrong_password_is_refused_quickly_and_names_the_setting(
    obs: ObsStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    obs_link = ObsLink(obs.url, "not-the-password")
    # Left alone, simpleobsws would wait the whole 30 s connect timeout here.
    async with asyncio.timeout(QUICK_S):
        with pytest.raises(ObsPasswordError, match="refused the password") as refused:
            await obs_link.connect(timeout_s=30)
    assert "MARIONETTE_OBS_PASSWORD" in str(refused.value)
    assert "Show Connect Info" in str(refused.value)
    assert "not-the-password" not in str(refused.value)
    assert "not-the-password" not in caplog.text
    assert not obs_link.connected
    assert obs.requests == []


async def test_a_missing_password_is_named_as_missing(obs: ObsStandIn) -> None:
    obs_link = ObsLink(obs.url, "")
    async with asyncio.timeout(QUICK_S):
        with pytest.raises(ObsPasswordError, match="asks for a password") as refused:
            await obs_link.connect(timeout_s=30)
    assert "MARIONETTE_OBS_PASSWORD" in str(refused.value)


async def test_the_right_password_is_never_logged(
    obs: ObsStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    obs_link = ObsLink(obs.url, PASSWORD)
    await obs_link.connect(timeout_s=5)
    await obs_link.switch_scene("BRB")
    await obs_link.close()
    assert "connected to OBS 31.0.0" in caplog.text
    assert PASSWORD not in caplog.text


async def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ObsUnavailable, match="cannot reach OBS"):
        await ObsLink(f"ws://127.0.0.1:{port}", PASSWORD).connect(timeout_s=2)


async def test_scenes_come_top_to_bottom_and_inputs_by_name(obs: ObsStandIn, link: ObsLink) -> None:
    assert await link.scenes() == ["Main", "Talking", "BRB"]
    raw = await link.call("GetSceneList")  # what OBS sends: bottom first
    assert [scene["sceneName"] for scene in raw["scenes"]] == ["BRB", "Talking", "Main"]
    assert await link.inputs() == ["Character Audio", "Captions", "Character", "BRB Card"]


async def test_switch_scene_and_current_scene(obs: ObsStandIn, link: ObsLink) -> None:
    assert await link.current_scene() == "Main"
    await link.switch_scene("Talking")
    assert obs.program_scene == "Talking"
    assert await link.current_scene() == "Talking"


async def test_set_text_overlays_the_text_setting(obs: ObsStandIn, link: ObsLink) -> None:
    obs.input_state["Captions"].settings["font"] = {"face": "Sans"}
    await link.set_text("Captions", "hello chat")
    assert obs.input_state["Captions"].settings == {"text": "hello chat", "font": {"face": "Sans"}}
    answer = await link.call("GetInputSettings", {"inputName": "Captions"})
    assert answer["inputSettings"]["text"] == "hello chat"


async def test_set_mute_and_set_filter(obs: ObsStandIn, link: ObsLink) -> None:
    await link.set_mute("Character Audio", True)
    assert obs.input_state["Character Audio"].muted
    await link.set_mute("Character Audio", False)
    assert not obs.input_state["Character Audio"].muted
    await link.set_filter("Character", "Glow", True)
    assert obs.filters[("Character", "Glow")] is True
    with pytest.raises(ObsRequestFailed) as failed:
        await link.set_filter("Character", "Sparkle", True)
    assert failed.value.code == 600


async def test_set_source_visible_looks_the_id_up_once(obs: ObsStandIn, link: ObsLink) -> None:
    await link.set_source_visible("Main", "Captions", False)
    await link.set_source_visible("Main", "Captions", True)
    await link.set_source_visible("Main", "Captions", False)
    captions = next(item for item in obs.scene_items["Main"] if item.source == "Captions")
    assert captions.enabled is False
    assert types_of(obs)[1:] == ["GetSceneItemId"] + ["SetSceneItemEnabled"] * 3
    enabled = {"sceneName": "Main", "sceneItemId": captions.item_id}
    assert (await link.call("GetSceneItemEnabled", enabled)) == {"sceneItemEnabled": False}


async def test_set_source_visible_finds_an_item_added_again(obs: ObsStandIn, link: ObsLink) -> None:
    await link.set_source_visible("Main", "Character", False)
    new_id = obs.readd_scene_item("Main", "Character")  # enabled again, with a new id
    await link.set_source_visible("Main", "Character", False)
    character = next(item for item in obs.scene_items["Main"] if item.source == "Character")
    assert (character.item_id, character.enabled) == (new_id, False)
    assert types_of(obs).count("GetSceneItemId") == 2


async def test_an_unknown_scene_fails_with_resource_not_found(link: ObsLink) -> None:
    with pytest.raises(ObsRequestFailed, match="Nowhere") as failed:
        await link.switch_scene("Nowhere")
    assert (failed.value.request_type, failed.value.code) == ("SetCurrentProgramScene", 600)
    with pytest.raises(ObsRequestFailed) as failed:
        await link.set_source_visible("Main", "Nothing", True)
    assert (failed.value.request_type, failed.value.code) == ("GetSceneItemId", 600)


async def test_unknown_requests_and_missing_fields_fail_with_obs_codes(link: ObsLink) -> None:
    with pytest.raises(ObsRequestFailed) as failed:
        await link.call("MakeItSparkle")
    assert failed.value.code == 204
    with pytest.raises(ObsRequestFailed, match="sceneName") as failed:
        await link.call("SetCurrentProgramScene", {})
    assert failed.value.code == 300


async def test_events_reach_on_event_in_order_as_subscribed(
    obs: ObsStandIn, link: ObsLink, events: Events
) -> None:
    other = ObsLink(obs.url, PASSWORD)  # another client, as OBS's own UI would be
    await other.connect(timeout_s=5)
    try:
        await other.switch_scene("BRB")
        await other.set_source_visible("BRB", "BRB Card", False)  # SceneItems: not asked for
        await other.set_filter("Character", "Glow", True)  # Filters: not asked for
        await other.set_mute("Character Audio", True)
        assert await events.wait_for("InputMuteStateChanged") == {
            "inputName": "Character Audio",
            "inputMuted": True,
        }
    finally:
        await other.close()
    assert events.seen[0] == ("CurrentProgramSceneChanged", {"sceneName": "BRB"})
    assert events.types() == ["CurrentProgramSceneChanged", "InputMuteStateChanged"]


async def test_a_failing_on_event_does_not_stop_later_events(obs: ObsStandIn) -> None:
    seen: list[str] = []
    both = asyncio.Event()

    async def fussy(event_type: str, event_data: dict[str, Any]) -> None:
        seen.append(event_data["sceneName"])
        if len(seen) == 1:
            raise RuntimeError("the handler broke")
        both.set()

    obs_link = ObsLink(obs.url, PASSWORD, on_event=fussy)
    await obs_link.connect(timeout_s=5)
    try:
        await obs_link.switch_scene("BRB")
        await obs_link.switch_scene("Talking")
        await asyncio.wait_for(both.wait(), 2)
    finally:
        await obs_link.close()
    assert seen == ["BRB", "Talking"]


async def test_stop_drops_the_link_and_start_lets_it_connect_again(
    obs: ObsStandIn, link: ObsLink, events: Events
) -> None:
    await link.switch_scene("Talking")
    port = obs.port
    await obs.stop()
    async with asyncio.timeout(2):
        await link.wait_closed()
    assert not link.connected
    assert events.types()[-1] == "ExitStarted"
    with pytest.raises(ObsUnavailable):
        await link.current_scene()
    with pytest.raises(ObsUnavailable):
        await link.connect(timeout_s=2)

    await obs.start()
    assert obs.port == port
    await link.connect(timeout_s=5)
    assert link.connected
    assert await link.current_scene() == "Talking"  # OBS kept its state


async def test_a_request_in_flight_fails_at_once_when_obs_goes(obs: ObsStandIn) -> None:
    obs.stall.add("GetInputList")
    obs_link = ObsLink(obs.url, PASSWORD, request_timeout_s=30)
    await obs_link.connect(timeout_s=5)
    pending = asyncio.create_task(obs_link.inputs())
    await obs.wait_for(lambda request: request.request_type == "GetInputList")
    await obs.stop()
    async with asyncio.timeout(QUICK_S):
        with pytest.raises(ObsUnavailable, match="dropped during GetInputList"):
            await pending


async def test_an_unanswered_request_times_out_as_unavailable(obs: ObsStandIn) -> None:
    obs.stall.add("GetInputList")
    obs_link = ObsLink(obs.url, PASSWORD, request_timeout_s=0.3)
    await obs_link.connect(timeout_s=5)
    try:
        with pytest.raises(ObsUnavailable, match="did not answer GetInputList"):
            await obs_link.inputs()
        assert obs_link.connected  # a slow answer is not a dropped connection
    finally:
        await obs_link.close()


# The JSON subprotocol, spoken by hand (ObsLink always asks for msgpack).


def auth_string(password: str, hello: dict[str, Any]) -> str:
    challenge = hello["d"]["authentication"]
    secret = base64.b64encode(hashlib.sha256((password + challenge["salt"]).encode()).digest())
    digest = hashlib.sha256(secret + challenge["challenge"].encode()).digest()
    return base64.b64encode(digest).decode()


async def receive_text(ws: ClientConnection) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), 2)
    assert isinstance(frame, str)  # JSON sessions speak in text frames
    message: dict[str, Any] = json.loads(frame)
    return message


@pytest.mark.parametrize("subprotocols", [[JSON], None])
async def test_json_subprotocol_handshake_request_and_event(
    obs: ObsStandIn, subprotocols: list[Subprotocol] | None
) -> None:
    async with connect(obs.url, subprotocols=subprotocols) as ws:
        assert ws.subprotocol == (subprotocols[0] if subprotocols else None)
        hello = await receive_text(ws)
        assert hello["op"] == 0
        assert hello["d"]["obsWebSocketVersion"] == "5.5.2"
        identify = {"rpcVersion": 1, "authentication": auth_string(PASSWORD, hello)}
        await ws.send(json.dumps({"op": 1, "d": identify | {"eventSubscriptions": 1 << 2}}))
        assert await receive_text(ws) == {"op": 2, "d": {"negotiatedRpcVersion": 1}}
        request = {"requestType": "SetCurrentProgramScene", "requestId": "r1"}
        await ws.send(json.dumps({"op": 6, "d": request | {"requestData": {"sceneName": "BRB"}}}))
        answer = await receive_text(ws)
        assert answer["op"] == 7
        assert answer["d"]["requestId"] == "r1"
        assert answer["d"]["requestStatus"] == {"result": True, "code": 100}
        event = await receive_text(ws)
        assert event["op"] == 5
        assert event["d"]["eventType"] == "CurrentProgramSceneChanged"
        assert event["d"]["eventData"] == {"sceneName": "BRB"}
    assert obs.program_scene == "BRB"


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 2)
    except ConnectionClosed:
        return ws.close_code, ws.close_reason


async def test_json_wrong_authentication_closes_4009(obs: ObsStandIn) -> None:
    async with connect(obs.url, subprotocols=[JSON]) as ws:
        hello = await receive_text(ws)
        identify = {"rpcVersion": 1, "authentication": auth_string("guess", hello)}
        await ws.send(json.dumps({"op": 1, "d": identify}))
        assert await closed_with(ws) == (4009, "Authentication failed.")


async def test_json_request_before_identify_closes_4007(obs: ObsStandIn) -> None:
    async with connect(obs.url) as ws:
        await receive_text(ws)
        request = {"requestType": "GetVersion", "requestId": "early"}
        await ws.send(json.dumps({"op": 6, "d": request}))
        code, _ = await closed_with(ws)
    assert code == 4007
    assert obs.requests == []
