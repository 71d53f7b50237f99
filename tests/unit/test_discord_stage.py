"""The discord stage's handlers in memory (StageHarness): which turns are answered in
Discord and how, and what silences the voice."""

from typing import Any, cast

import numpy as np
import pytest

from contracts import ChatMessage, Control, Interrupt, Panic, TtsChunk
from contracts.policy import scripted_reply
from services.bus.harness import StageHarness
from services.discord.errors import DiscordTokenError
from services.discord.replies import ELLIPSIS
from services.discord.settings import DiscordSettings
from services.discord.stage import DiscordStage
from services.discord.voice import SpeechSource
from services.registry import default_stages, stage_class

CHANNEL = 111_111_111_111_111_111
MESSAGE = 222_222_222_222_222_222


class PostedReplies:
    """Stands in for the discord.py client: what would have been posted."""

    bot_id = 1

    def __init__(self) -> None:
        self.posted: list[tuple[int, int, str]] = []

    async def post_reply(self, channel_id: int, message_id: int, text: str) -> None:
        self.posted.append((channel_id, message_id, text))


def harness(**settings: Any) -> tuple[StageHarness[DiscordStage], PostedReplies]:
    bot = PostedReplies()
    configured = DiscordSettings(token="t", channels=[CHANNEL], reply_interval_s=0, **settings)
    return StageHarness(lambda bus: DiscordStage(configured, bus, cast(Any, bot))), bot


def chosen(turn: str, platform: str = "discord") -> ChatMessage:
    return ChatMessage(
        session_id="local", turn_id=turn, seq=0, platform=platform,
        author="alice", text="hello?", channel=str(CHANNEL), platform_message_id=str(MESSAGE),
    )  # fmt: skip


def chunk(turn: str, index: int, session: str = "local") -> TtsChunk:
    pcm = (np.sin(np.arange(2205) / 5) * 8000).astype("<i2").tobytes()  # 0.1 s
    return TtsChunk(session_id=session, turn_id=turn, seq=index, index=index, text="hi",
                    sample_rate=22_050, pcm=pcm)  # fmt: skip


def control(seq: int, command: Any) -> Control:
    return Control(session_id="local", message_id=f"test:{seq}", seq=seq, command=command)


async def test_a_chosen_discord_line_is_answered_as_a_reply() -> None:
    h, bot = harness()
    await h.send(chosen("discord-1"), *scripted_reply("local", "discord-1", "Hi Alice!"))
    assert bot.posted == [(CHANNEL, MESSAGE, "Hi Alice!")]
    assert h.stored.state == {}  # where it went is forgotten once answered


async def test_other_platforms_and_failed_replies_are_not_posted() -> None:
    h, bot = harness()
    await h.send(chosen("tw-1", platform="twitch"), *scripted_reply("local", "tw-1", "Hi!"))
    await h.send(chosen("discord-2"))
    tokens = scripted_reply("local", "discord-2", "Sorry.")
    blocked = tokens[-1].model_copy(update={"status": "blocked"})
    await h.send(*tokens[:-1], blocked)
    assert bot.posted == []
    assert h.stored.state == {}


async def test_a_long_answer_is_shortened() -> None:
    h, bot = harness(reply_max_chars=36)  # the first sentence fills over half of it
    text = "This is a sentence. " + "and then it goes on and on " * 10
    await h.send(chosen("discord-3"), *scripted_reply("local", "discord-3", text))
    [(_, _, posted)] = bot.posted
    assert posted == "This is a sentence."
    h2, bot2 = harness(reply_max_chars=40)
    await h2.send(chosen("discord-4"), *scripted_reply("local", "discord-4", "word " * 30))
    [(_, _, cut)] = bot2.posted
    assert len(cut) <= 40
    assert cut.endswith(ELLIPSIS)


async def test_replies_switched_off_in_the_settings() -> None:
    h, bot = harness(reply=False)
    await h.send(chosen("discord-5"), *scripted_reply("local", "discord-5", "Hi!"))
    assert bot.posted == []


async def test_a_panic_mutes_the_replies_and_silences_the_voice() -> None:
    h, bot = harness()
    speech = SpeechSource()
    h.stage.seat.speech = speech
    await h.send(chosen("discord-6"), chunk("discord-6", 0), chunk("discord-6", 1))
    assert speech.queued() == 10
    await h.send(control(0, Panic(engaged=True)))
    assert speech.queued() == 0
    await h.send(*scripted_reply("local", "discord-6", "Too late."))
    assert bot.posted == []
    assert h.stored.state == {}  # forgotten even while off


async def test_an_interrupt_flushes_the_turns_audio_only() -> None:
    h, _ = harness()
    speech = SpeechSource()
    h.stage.seat.speech = speech
    await h.send(chunk("t1", 0), chunk("t2", 0), chunk("t1", 1, session="elsewhere"))
    assert speech.queued() == 10  # the other session's audio is not this bot's to speak
    await h.send(control(0, Interrupt(target_turn_id="t1")))
    assert speech.queued() == 5
    await h.send(chunk("t1", 1))  # a late chunk of the interrupted turn
    assert speech.queued() == 5


def test_the_registry_starts_it_only_with_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    assert stage_class("discord") is DiscordStage
    monkeypatch.delenv("MARIONETTE_DISCORD_TOKEN", raising=False)
    assert DiscordSettings.configured() is False
    monkeypatch.setenv("MARIONETTE_DISCORD_TOKEN", "  ")
    assert DiscordSettings.configured() is False
    monkeypatch.setenv("MARIONETTE_DISCORD_TOKEN", "a-token")
    assert DiscordSettings.configured() is True
    assert "discord" in default_stages()


async def test_without_a_token_the_start_says_where_to_get_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MARIONETTE_DISCORD_TOKEN", raising=False)
    monkeypatch.setenv("MARIONETTE_DISCORD_CHANNELS", "[1]")
    with pytest.raises(DiscordTokenError, match="MARIONETTE_DISCORD_TOKEN is not set") as error:
        await DiscordStage.build(cast(Any, None))
    assert "Reset Token" in str(error.value)
