"""services.vts.api.VtsLink against the VTube Studio stand-in (tests/standins/vts.py):
authentication and its token, revocation, denial, hotkeys, expressions, parameter
injection, and VTube Studio quitting and coming back."""

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from services.vts.api import (
    Expression,
    Hotkey,
    VtsAccessDenied,
    VtsApiError,
    VtsLink,
    VtsUnavailable,
)
from tests.standins.vts import VtsStandIn


def saved(token_file: Path) -> str | None:
    """The saved token, None when there is no file (sync: a tiny file, read in a test)."""
    return token_file.read_text().strip() if token_file.exists() else None


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
async def vts() -> AsyncIterator[VtsStandIn]:
    async with VtsStandIn() as standin:
        yield standin


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "vts" / "token"


@pytest.fixture
async def link(vts: VtsStandIn, token_file: Path) -> AsyncIterator[VtsLink]:
    connected = VtsLink(vts.url, token_file, request_timeout_s=2.0)
    await connected.connect()
    yield connected
    await connected.close()


async def test_first_connect_asks_for_a_token_saves_it_and_authenticates(
    vts: VtsStandIn, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = VtsLink(vts.url, token_file)
    with caplog.at_level(logging.INFO, "marionette.vts"):
        model = await link.connect()
    assert model == "Akari"
    assert link.connected
    assert vts.token_requests == 1
    token = saved(token_file)
    assert token in vts.tokens
    assert mode_of(token_file) == 0o600
    assert "allow Marionette in VTube Studio's popup" in caplog.text
    assert token not in caplog.text
    await link.close()
    assert not link.connected


async def test_a_second_link_reuses_the_saved_token(vts: VtsStandIn, token_file: Path) -> None:
    first = VtsLink(vts.url, token_file)
    await first.connect()
    await first.close()
    second = VtsLink(vts.url, token_file)
    assert await second.connect() == "Akari"
    assert vts.token_requests == 1
    await second.close()


async def test_a_revoked_token_is_asked_for_again_on_connect(
    vts: VtsStandIn, token_file: Path
) -> None:
    first = VtsLink(vts.url, token_file)
    await first.connect()
    await first.close()
    old_token = saved(token_file)
    vts.revoke_tokens()
    second = VtsLink(vts.url, token_file)
    await second.connect()
    assert vts.token_requests == 2
    assert saved(token_file) != old_token
    assert saved(token_file) in vts.tokens
    await second.close()


async def test_revoked_mid_session_the_next_request_authenticates_again(
    vts: VtsStandIn, link: VtsLink, token_file: Path
) -> None:
    vts.revoke_tokens()
    await link.trigger_hotkey(vts.hotkey_id("Wave"))
    assert vts.token_requests == 2
    assert [hotkey for _, hotkey in vts.hotkeys_triggered] == [vts.hotkey_id("Wave")]
    assert saved(token_file) in vts.tokens


async def test_requests_revoked_together_ask_the_user_once(vts: VtsStandIn, link: VtsLink) -> None:
    vts.revoke_tokens()
    await asyncio.gather(*(link.inject({"MouthOpen": n / 10}) for n in range(5)))
    assert vts.token_requests == 2
    assert len(vts.injections) == 5


async def test_denied_raises_access_denied_saying_what_to_do(
    vts: VtsStandIn, token_file: Path
) -> None:
    vts.allow_plugins = False
    link = VtsLink(vts.url, token_file)
    with pytest.raises(VtsAccessDenied, match=r"allow 'Marionette' in VTube Studio") as caught:
        await link.connect()
    assert "Settings > General > Plugins" in str(caught.value)
    assert not link.connected
    assert saved(token_file) is None


async def test_revoked_then_denied_raises_access_denied(
    vts: VtsStandIn, link: VtsLink, token_file: Path
) -> None:
    vts.revoke_tokens()
    vts.allow_plugins = False
    with pytest.raises(VtsAccessDenied):
        await link.hotkeys()
    assert saved(token_file) is None


async def test_nobody_answering_the_popup_is_access_denied(token_file: Path) -> None:
    async def popup_never_answered(socket: ServerConnection) -> None:
        await socket.wait_closed()

    async with serve(popup_never_answered, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        link = VtsLink(f"ws://127.0.0.1:{port}", token_file, token_wait_s=0.3)
        with pytest.raises(VtsAccessDenied, match="nobody answered"):
            await link.connect()
        assert not link.connected
        assert saved(token_file) is None


async def test_hotkeys_and_expressions_are_listed(vts: VtsStandIn, link: VtsLink) -> None:
    assert await link.hotkeys() == [
        Hotkey("Smile", "ToggleExpression", "smile.exp3.json", vts.hotkey_id("Smile")),
        Hotkey("Angry", "ToggleExpression", "angry.exp3.json", vts.hotkey_id("Angry")),
        Hotkey("Wave", "TriggerAnimation", "wave.motion3.json", vts.hotkey_id("Wave")),
    ]
    assert await link.expressions() == [
        Expression("smile", "smile.exp3.json", False),
        Expression("angry", "angry.exp3.json", False),
        Expression("sad", "sad.exp3.json", False),
    ]


async def test_no_model_loaded(token_file: Path) -> None:
    async with VtsStandIn(model_name="") as vts:
        link = VtsLink(vts.url, token_file)
        assert await link.connect() == ""
        assert await link.hotkeys() == []
        with pytest.raises(VtsApiError) as caught:
            await link.trigger_hotkey("Wave")
        assert caught.value.error_id == 201  # HotkeyExecutionFailedBecauseNoModelLoaded
        await link.close()


async def test_trigger_and_set_expression_reach_vts(vts: VtsStandIn, link: VtsLink) -> None:
    await link.trigger_hotkey(vts.hotkey_id("Wave"))
    await link.set_expression("sad.exp3.json", True, fade_s=0.5)
    await link.set_expression("sad.exp3.json", False)
    assert [hotkey for _, hotkey in vts.hotkeys_triggered] == [vts.hotkey_id("Wave")]
    assert [(file, on) for _, file, on in vts.expression_changes] == [
        ("sad.exp3.json", True),
        ("sad.exp3.json", False),
    ]
    with pytest.raises(VtsApiError) as caught:
        await link.trigger_hotkey("no such hotkey")
    assert caught.value.error_id == 202  # HotkeyIDNotFoundInModel
    assert caught.value.message_type == "HotkeyTriggerRequest"
    with pytest.raises(VtsApiError) as caught:
        await link.set_expression("gone.exp3.json", True)
    assert caught.value.error_id == 651  # ExpressionActivationRequestFileNotFound


async def test_inject_records_the_values(vts: VtsStandIn, link: VtsLink) -> None:
    await link.inject({"MouthOpen": 0.8, "MouthSmile": 0.3})
    await link.inject({"MouthOpen": 0.1})
    assert [values for _, values in vts.injections] == [
        {"MouthOpen": 0.8, "MouthSmile": 0.3},
        {"MouthOpen": 0.1},
    ]
    assert vts.held_parameters() == {"MouthOpen", "MouthSmile"}


async def test_inject_errors_carry_the_real_ids(vts: VtsStandIn, link: VtsLink) -> None:
    with pytest.raises(VtsApiError) as caught:
        await link.inject({"MouthWide": 0.5})
    assert caught.value.error_id == 453  # InjectDataParamNameNotFound
    assert caught.value.message_type == "InjectParameterDataRequest"
    with pytest.raises(VtsApiError) as caught:
        await link.inject({"MouthOpen": 2_000_000.0})
    assert caught.value.error_id == 451  # InjectDataValueInvalid
    with pytest.raises(ValueError, match="Out of range float"):
        await link.inject({"MouthOpen": float("nan")})
    assert vts.injections == []
    assert link.connected  # a refused request leaves the session as it was


async def test_another_plugin_cannot_set_a_held_parameter(
    vts: VtsStandIn, link: VtsLink, tmp_path: Path
) -> None:
    await link.inject({"MouthOpen": 0.5})
    other = VtsLink(vts.url, tmp_path / "other-token", plugin_name="Other plugin")
    await other.connect()
    with pytest.raises(VtsApiError) as caught:
        await other.inject({"MouthOpen": 0.9})
    assert caught.value.error_id == 454  # InjectDataParamControlledByOtherPlugin
    await other.close()


async def test_responses_out_of_order_reach_their_requests(link: VtsLink) -> None:
    hotkeys, expressions, model = await asyncio.gather(
        link.hotkeys(), link.expressions(), link.request("CurrentModelRequest")
    )
    assert len(hotkeys) == 3
    assert len(expressions) == 3
    assert model["modelName"] == "Akari"


async def test_vts_quitting_closes_the_link_and_a_restart_accepts_it_again(
    vts: VtsStandIn, link: VtsLink, token_file: Path
) -> None:
    await vts.stop()
    await asyncio.wait_for(link.wait_closed(), 2)
    assert not link.connected
    with pytest.raises(VtsUnavailable):
        await link.inject({"MouthOpen": 0.2})
    with pytest.raises(VtsUnavailable, match="cannot reach VTube Studio"):
        await link.connect()
    await vts.start()
    assert await link.connect() == "Akari"
    assert link.connected
    assert vts.token_requests == 1  # the token granted before the restart still works
    await link.inject({"MouthOpen": 0.2})
    assert vts.injections[-1][1] == {"MouthOpen": 0.2}


async def test_nothing_listening_is_unavailable(token_file: Path) -> None:
    async with VtsStandIn() as vts:
        url = vts.url
    link = VtsLink(url, token_file, request_timeout_s=1.0)
    with pytest.raises(VtsUnavailable, match="Start API"):
        await link.connect()
    assert not link.connected
