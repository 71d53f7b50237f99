"""The twitch stage on a real Redis against the Twitch stand-in (tests/standins/twitch.py),
through the real twitchio client: chat in, commands, answers back into chat, the socket
moved or dropped, a token expired, credentials refused."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from contracts import (
    ChatIncoming,
    ChatMessage,
    Control,
    Interrupt,
    ModuleToggle,
    Panic,
    PolicyToken,
)
from contracts.policy import scripted_reply
from contracts.topics import CHAT_INCOMING, CHAT_MESSAGE, CONTROL, POLICY_TOKEN
from services.bus import BusSettings, Producer, StageRuntime
from services.errors import StageStartError
from services.twitch.stage import TwitchStage
from tests.helpers import read_topic, wait_until
from tests.standins.twitch import CLIENT_ID, CLIENT_SECRET, TwitchStandIn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SESSION = "live"


@pytest.fixture
async def twitch() -> AsyncIterator[TwitchStandIn]:
    async with TwitchStandIn() as standin:
        yield standin


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "twitch-token.json"


def configure(
    monkeypatch: pytest.MonkeyPatch, twitch: TwitchStandIn, token_file: Path, **settings: Any
) -> None:
    """MARIONETTE_TWITCH_* pointing at the stand-in, with a fresh token of the bot's."""
    access, refresh = twitch.issue_token("marionette_bot")
    values: dict[str, Any] = {
        "channel": "streamer", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "access_token": access, "refresh_token": refresh, "session_id": SESSION,
        "api_url": twitch.api_url, "oauth_url": twitch.oauth_url,
        "eventsub_url": twitch.eventsub_url, "token_file": token_file, **settings,
    }  # fmt: skip
    for name, value in values.items():
        monkeypatch.setenv(f"MARIONETTE_TWITCH_{name.upper()}", str(value))


def kept(token_file: Path) -> dict[str, str] | None:
    """What the stage keeps in its token file, once it wrote one."""
    try:
        return dict(json.loads(token_file.read_text()))
    except FileNotFoundError:
        return None


async def incoming(client: Redis, bus: BusSettings) -> list[ChatIncoming]:
    found = await read_topic(client, CHAT_INCOMING, bus.partitions)
    return [m for m in found if isinstance(m, ChatIncoming)]


async def wait_for_lines(client: Redis, bus: BusSettings, count: int) -> list[ChatIncoming]:
    async def arrived() -> bool:
        return len(await incoming(client, bus)) >= count

    await wait_until(arrived, timeout_s=10, what=f"{count} lines on chat.incoming")
    return await incoming(client, bus)


async def test_a_chat_line_arrives_on_chat_incoming_with_every_field(
    monkeypatch: pytest.MonkeyPatch, twitch: TwitchStandIn, token_file: Path,
    bus_settings: BusSettings, redis_client: Redis,
) -> None:  # fmt: skip
    configure(monkeypatch, twitch, token_file)
    async with StageRuntime(TwitchStage, bus_settings):
        await twitch.wait_subscribed()
        [subscription] = twitch.subscriptions.values()
        assert subscription["type"] == "channel.chat.message"
        assert subscription["condition"] == {"broadcaster_user_id": twitch.channel.user_id,
                                             "user_id": twitch.bot.user_id}  # fmt: skip
        twitch_id = await twitch.send_chat("hi @marionette_bot Kappa", badges=["subscriber"])
        [line] = await wait_for_lines(redis_client, bus_settings, 1)
        assert (line.platform, line.author, line.author_id) == ("twitch", "Viewer", "1003")
        assert line.text == "hi @marionette_bot Kappa"
        assert line.badges == ["subscriber"]
        assert line.emotes == ["Kappa"]
        assert line.mentions_character
        assert line.platform_message_id == twitch_id
        assert line.channel == twitch.channel.user_id
        assert line.reply_to is None
        assert (line.session_id, line.seq, line.turn_id) == (SESSION, 0, f"tw.chat.{twitch_id}")

        await twitch.send_chat("", message_id=twitch_id)  # Twitch delivers it again
        first, again = await wait_for_lines(redis_client, bus_settings, 2)
        assert again.message_id == first.message_id, "the runtime drops the copy by its id"


async def test_moderators_command_and_viewers_do_not(
    monkeypatch: pytest.MonkeyPatch, twitch: TwitchStandIn, token_file: Path,
    bus_settings: BusSettings, redis_client: Redis,
) -> None:  # fmt: skip
    configure(monkeypatch, twitch, token_file)
    async with (
        StageRuntime(TwitchStage, bus_settings) as runtime,
        Producer(bus_settings, "test", [CHAT_MESSAGE]) as out,
    ):
        await twitch.wait_subscribed()
        await twitch.send_chat("!panic", chatter="viewer", badges=["vip", "subscriber"])
        await twitch.send_chat("!mute", chatter="viewer")
        mod: dict[str, Any] = {"chatter": "mod_mia", "badges": ["moderator"]}
        commands = ("!panic", "!panic off", "!mute", "!unmute", "!persona kitsu energy=0.9")
        ids = [await twitch.send_chat(text, **mod) for text in commands]
        await out.publish(ChatMessage(session_id=SESSION, turn_id="turn-now", seq=0,
                                      platform="cli", author="op", text="a story"))  # fmt: skip

        async def seen() -> bool:
            newest = runtime.stage.newest.get(SESSION)
            return newest is not None and newest.turn == "turn-now"

        await wait_until(seen, what="the stage to see the turn")
        ids.append(await twitch.send_chat("!skip", **mod))
        say_id = await twitch.send_chat("!say Behave, chat!", chatter="streamer")

        async def tokens() -> list[PolicyToken]:
            found = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)
            return [t for t in found if isinstance(t, PolicyToken)]

        async def said() -> bool:
            return any(t.final for t in await tokens())

        await wait_until(said, what="!say's tokens")
        controls = [c for c in await read_topic(redis_client, CONTROL, bus_settings.partitions)
                    if isinstance(c, Control)]  # fmt: skip
        assert [c.command for c in controls[:4]] == [
            Panic(engaged=True), Panic(engaged=False),
            ModuleToggle(module="tts", enabled=False), ModuleToggle(module="tts", enabled=True),
        ]  # fmt: skip
        assert controls[4].command.persona == "kitsu"  # type: ignore[union-attr]
        assert controls[4].command.edits == {"energy": 0.9}  # type: ignore[union-attr]
        assert controls[5].command == Interrupt(target_turn_id="turn-now", reason="twitch_skip")
        assert len(controls) == 6, "the viewer's commands did nothing"
        assert [c.message_id for c in controls] == [f"tw.cmd.{i}:0" for i in ids]
        assert {c.session_id for c in controls} == {SESSION}
        final = (await tokens())[-1]
        assert (final.turn_id, final.reply_text) == (f"tw.say.{say_id}", "Behave, chat!")
        assert await incoming(redis_client, bus_settings) == [], "commands are not chat"


async def test_an_answer_is_posted_back_as_a_shortened_reply(
    monkeypatch: pytest.MonkeyPatch, twitch: TwitchStandIn, token_file: Path,
    bus_settings: BusSettings, redis_client: Redis,
) -> None:  # fmt: skip
    configure(monkeypatch, twitch, token_file, reply_in_chat="true", reply_max_chars=60)
    async with (
        StageRuntime(TwitchStage, bus_settings),
        Producer(bus_settings, "arbiter", [CHAT_MESSAGE, POLICY_TOKEN]) as out,
    ):
        await twitch.wait_subscribed()
        twitch_id = await twitch.send_chat("what is your favourite colour?")
        [line] = await wait_for_lines(redis_client, bus_settings, 1)
        await out.publish(ChatMessage(**line.model_dump()))  # the arbiter chose it: a turn
        answer = ("Purple, like a fox at dusk! I also like the deep green of pine forests "
                  "after the rain, but purple wins.")  # fmt: skip
        for token in scripted_reply(line.session_id, line.turn_id or "", answer):
            await out.publish(token)

        async def posted() -> bool:
            return bool(twitch.sent)

        await wait_until(posted, timeout_s=10, what="the answer in chat")
        [sent] = twitch.sent
        assert sent.text == "Purple, like a fox at dusk!"
        assert sent.reply_parent_message_id == twitch_id
        assert sent.sender_id == twitch.bot.user_id
        # The bot's message comes back through EventSub; it is not chat for the character.
        await twitch.send_chat("nice")
        lines = await wait_for_lines(redis_client, bus_settings, 2)
        assert [m.text for m in lines] == ["what is your favourite colour?", "nice"]


async def test_chat_keeps_flowing_after_a_reconnect_and_a_dropped_socket(
    monkeypatch: pytest.MonkeyPatch, twitch: TwitchStandIn, token_file: Path,
    bus_settings: BusSettings, redis_client: Redis,
) -> None:  # fmt: skip
    configure(monkeypatch, twitch, token_file)
    async with StageRuntime(TwitchStage, bus_settings):
        await twitch.wait_subscribed()
        await twitch.send_chat("one")
        await wait_for_lines(redis_client, bus_settings, 1)

        await twitch.reconnect()  # session_reconnect: move to the reconnect_url

        async def moved() -> bool:
            return twitch.connections == 2 and len(twitch.sessions) == 1

        await wait_until(moved, what="the client on the reconnect_url")
        await twitch.send_chat("two")
        await wait_for_lines(redis_client, bus_settings, 2)
        assert len(twitch.subscriptions) == 1, "a moved session keeps its subscriptions"

        await twitch.drop()  # the connection dies: a new session, subscribed again
        await twitch.wait_subscribed(made=2)
        await twitch.send_chat("three")
        lines = await wait_for_lines(redis_client, bus_settings, 3)
        assert [m.text for m in lines] == ["one", "two", "three"]
        assert twitch.connections == 3


async def test_an_expired_token_is_refreshed_and_kept(
    monkeypatch: pytest.MonkeyPatch, twitch: TwitchStandIn, token_file: Path,
    bus_settings: BusSettings,
) -> None:  # fmt: skip
    configure(monkeypatch, twitch, token_file, reply_in_chat="true")
    async with StageRuntime(TwitchStage, bus_settings):
        await twitch.wait_subscribed()
        twitch.expire_tokens()  # the next call gets 401 "Invalid OAuth token"
        await twitch.send_chat("!mute", chatter="mod_mia", badges=["moderator"])

        async def answered() -> bool:
            return bool(twitch.sent) and twitch.refreshes == 1 and kept(token_file) is not None

        await wait_until(answered, timeout_s=10, what="the command's answer after a refresh")
        assert twitch.sent[0].text == "voice muted"
    saved = kept(token_file)
    assert saved is not None
    assert not twitch.tokens[saved["access_token"]].expired, "the refreshed token is kept"
    assert saved["refresh_token"] in twitch.refresh_tokens


async def test_an_expired_token_at_start_is_refreshed(
    monkeypatch: pytest.MonkeyPatch, twitch: TwitchStandIn, token_file: Path,
    bus_settings: BusSettings, redis_client: Redis,
) -> None:  # fmt: skip
    configure(monkeypatch, twitch, token_file)
    twitch.expire_tokens()
    async with StageRuntime(TwitchStage, bus_settings):
        await twitch.wait_subscribed()  # with the new token: the old one is refused
        await twitch.send_chat("still here")
        await wait_for_lines(redis_client, bus_settings, 1)
    assert twitch.refreshes == 1
    saved = kept(token_file)
    assert saved is not None
    assert not twitch.tokens[saved["access_token"]].expired


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"access_token": ""}, "MARIONETTE_TWITCH_ACCESS_TOKEN"),
        ({"access_token": "not-a-token", "refresh_token": ""}, "MARIONETTE_TWITCH_ACCESS_TOKEN"),
        ({"client_secret": "wrong"}, "MARIONETTE_TWITCH_CLIENT_SECRET"),
        ({"client_id": "someone-elses"}, "MARIONETTE_TWITCH_CLIENT_ID"),
        ({"channel": "nobody_here"}, "MARIONETTE_TWITCH_CHANNEL"),
        ({"bot_id": "4242"}, "MARIONETTE_TWITCH_BOT_ID"),
    ],
)
async def test_bad_credentials_fail_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, twitch: TwitchStandIn, token_file: Path,
    bus_settings: BusSettings, settings: dict[str, str], named: str,
) -> None:  # fmt: skip
    configure(monkeypatch, twitch, token_file, **settings)
    runtime = StageRuntime(TwitchStage, bus_settings)
    try:
        with pytest.raises(StageStartError, match=named) as raised:
            await runtime.start()
    finally:
        await runtime.client.aclose()
    if named == "MARIONETTE_TWITCH_ACCESS_TOKEN":
        assert "twitch token -u" in str(raised.value), "it says how to get a token"


async def test_a_token_that_cannot_write_fails_start_when_asked_to_answer(
    monkeypatch: pytest.MonkeyPatch, twitch: TwitchStandIn, token_file: Path,
    bus_settings: BusSettings,
) -> None:  # fmt: skip
    configure(monkeypatch, twitch, token_file, reply_in_chat="true")
    read_only, refresh = twitch.issue_token("marionette_bot", scopes=("user:read:chat",))
    monkeypatch.setenv("MARIONETTE_TWITCH_ACCESS_TOKEN", read_only)
    monkeypatch.setenv("MARIONETTE_TWITCH_REFRESH_TOKEN", refresh)
    runtime = StageRuntime(TwitchStage, bus_settings)
    try:
        with pytest.raises(StageStartError, match="ACCESS_TOKEN lacks the scope user:write:chat"):
            await runtime.start()
    finally:
        await runtime.client.aclose()
