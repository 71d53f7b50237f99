"""The twitch stage in memory (StageHarness), with a fake connection to Twitch: what a chat
line, a command and an answer become."""

from typing import Any

import pytest

from contracts import ChatMessage, Control, Interrupt, ModuleToggle, Panic, PolicyToken
from contracts.policy import scripted_reply
from contracts.topics import CHAT_INCOMING, CONTROL, POLICY_TOKEN
from services.bus.harness import StageHarness
from services.twitch.chat_in import TwitchLine
from services.twitch.settings import TwitchSettings
from services.twitch.stage import TwitchStage

BROADCASTER, BOT, VIEWER, MOD = "1001", "1002", "1003", "1004"


class FakeLink:
    """Twitch as the stage sees it: who it is, and what it posted."""

    bot_id, bot_login, broadcaster_id, can_write = BOT, "marionette_bot", BROADCASTER, True

    def __init__(self) -> None:
        self.posted: list[tuple[str, str | None]] = []

    async def run(self) -> None:
        pass

    async def send(self, text: str, reply_to: str | None) -> bool:
        self.posted.append((text, reply_to))
        return True


def harness(**settings: Any) -> tuple[StageHarness[TwitchStage], FakeLink]:
    link = FakeLink()
    chosen = TwitchSettings(channel="streamer", session_id="live", **settings)
    return StageHarness(lambda bus: TwitchStage(chosen, link, bus)), link


def viewer(text: str, number: int = 1, **kwargs: Any) -> TwitchLine:
    kwargs.setdefault("chatter_id", VIEWER)
    return TwitchLine(message_id=f"m-{number}", text=text, chatter_login="someone",
                      chatter_name="Someone", broadcaster_id=BROADCASTER, **kwargs)  # fmt: skip


def moderator(text: str, number: int = 1) -> TwitchLine:
    return viewer(text, number, chatter_id=MOD, badges=["moderator", "subscriber"])


def chosen_line(turn: str, twitch_id: str | None = "m-1", **kwargs: Any) -> ChatMessage:
    """The arbiter's choice of a line, as it reaches chat.message."""
    kwargs.setdefault("platform", "twitch")
    kwargs.setdefault("channel", BROADCASTER)
    return ChatMessage(session_id="live", turn_id=turn, seq=0, author="Someone",
                       text="hello?", platform_message_id=twitch_id, **kwargs)  # fmt: skip


def answer(turn: str, text: str, status: str = "ok") -> list[PolicyToken]:
    tokens = scripted_reply("live", turn, text)
    final = tokens[-1].model_copy(update={"status": status})
    return [*tokens[:-1], final]


async def test_a_line_goes_to_chat_incoming() -> None:
    stage, _ = harness()
    await stage.stage.handle_line(viewer("hello there", badges=["vip"]))
    [message] = stage.published(CHAT_INCOMING)
    assert message.session_id == "live"
    assert message.text == "hello there"
    assert message.badges == ["vip"]
    assert message.platform_message_id == "m-1"


async def test_the_bots_own_lines_and_commands_are_not_chat() -> None:
    stage, _ = harness()
    await stage.stage.handle_line(viewer("I said this", chatter_id=BOT))
    await stage.stage.handle_line(viewer("!uptime"))
    await stage.stage.handle_line(viewer("!panic"))
    assert stage.published() == []


async def test_a_moderators_commands_go_out_on_control() -> None:
    stage, _ = harness()
    for number, text in enumerate(["!panic", "!panic off", "!mute", "!persona kitsu"], 1):
        await stage.stage.handle_line(moderator(text, number))
    commands = [c.command for c in stage.published(CONTROL)]
    assert commands[:3] == [Panic(engaged=True), Panic(engaged=False),
                            ModuleToggle(module="tts", enabled=False)]  # fmt: skip
    assert commands[3].persona == "kitsu"
    first = stage.published(CONTROL)[0]
    assert first.session_id == "live"
    assert first.message_id == "tw.cmd.m-1:0"  # the same again if Twitch redelivers


async def test_the_broadcaster_commands_without_a_badge() -> None:
    stage, _ = harness()
    await stage.stage.handle_line(viewer("!mute", chatter_id=BROADCASTER))
    assert [c.command for c in stage.published(CONTROL)] == [
        ModuleToggle(module="tts", enabled=False)
    ]


async def test_say_speaks_the_words_in_the_session() -> None:
    stage, _ = harness()
    await stage.stage.handle_line(moderator("!say Hello chat, behave!", 9))
    tokens = stage.published(POLICY_TOKEN)
    assert tokens[-1].final
    assert tokens[-1].reply_text == "Hello chat, behave!"
    assert {t.turn_id for t in tokens} == {"tw.say.m-9"}
    assert {t.session_id for t in tokens} == {"live"}


async def test_skip_interrupts_the_newest_turn_or_nothing() -> None:
    stage, _ = harness()
    await stage.stage.handle_line(moderator("!skip", 1))
    assert stage.published(CONTROL) == []  # no turn yet: nothing to skip
    await stage.send(chosen_line("turn-a"), *answer("turn-a", "First.")[:1])
    await stage.send(*answer("turn-b", "Second.")[:1])
    await stage.stage.handle_line(moderator("!skip", 2))
    [skip] = stage.published(CONTROL)
    assert skip.command == Interrupt(target_turn_id="turn-b", reason="twitch_skip")


async def test_while_switched_off_chat_is_not_read_but_commands_work() -> None:
    stage, _ = harness()
    await stage.send(Control(session_id="x", message_id="panel:0", seq=0, command=Panic()))
    await stage.stage.handle_line(viewer("anyone there?"))
    assert stage.published(CHAT_INCOMING) == []
    await stage.stage.handle_line(moderator("!panic off"))
    assert [c.command for c in stage.published(CONTROL)] == [Panic(engaged=False)]


async def test_an_answer_is_posted_as_a_reply_shortened() -> None:
    stage, link = harness(reply_in_chat=True, reply_max_chars=40)
    long = "This is the first sentence. And this second one goes on far too long for chat."
    await stage.send(chosen_line("turn-a"), *answer("turn-a", long))
    assert link.posted == [("This is the first sentence.", "m-1")]


@pytest.mark.parametrize("status", ["blocked", "interrupted", "error"])
async def test_no_post_for_a_turn_that_did_not_end_well(status: str) -> None:
    stage, link = harness(reply_in_chat=True)
    await stage.send(chosen_line("turn-a"), *answer("turn-a", "Something.", status))
    assert link.posted == []


async def test_no_post_unless_asked_or_for_other_lines() -> None:
    quiet, quiet_link = harness()
    await quiet.send(chosen_line("turn-a"), *answer("turn-a", "Hi!"))
    assert quiet_link.posted == []
    stage, link = harness(reply_in_chat=True)
    await stage.send(chosen_line("t-panel", None, platform="control_panel"),
                     *answer("t-panel", "Hi!"))  # fmt: skip
    await stage.send(chosen_line("t-other", "m-7", channel="999"), *answer("t-other", "Hi!"))
    await stage.send(*answer("t-say", "Hi!"))
    await stage.send(chosen_line("t-empty", "m-8"), *answer("t-empty", "  "))
    assert link.posted == []


async def test_posts_over_the_rate_limit_are_dropped() -> None:
    stage, link = harness(reply_in_chat=True, chat_rate_messages=2)
    for number in range(4):
        turn = f"turn-{number}"
        await stage.send(chosen_line(turn, f"m-{number}"), *answer(turn, f"Answer {number}."))
    assert link.posted == [("Answer 0.", "m-0"), ("Answer 1.", "m-1")]


async def test_where_an_answer_goes_survives_a_crash() -> None:
    stage, link = harness(reply_in_chat=True)
    await stage.send(chosen_line("turn-a", "m-5"))
    await stage.restart()  # a replacement replica: memory gone, checkpointed state kept
    await stage.send(*answer("turn-a", "Still here."))
    assert link.posted == [("Still here.", "m-5")]


async def test_a_command_is_answered_in_chat_when_replies_are_on() -> None:
    stage, link = harness(reply_in_chat=True)
    await stage.stage.handle_line(moderator("!mute", 3))
    await stage.stage.handle_line(moderator("!frobnicate", 4))
    assert link.posted == [("voice muted", "m-3"), ("unknown command !frobnicate", "m-4")]
