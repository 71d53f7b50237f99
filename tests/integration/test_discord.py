"""The discord stage on real Redis against a stand-in of Discord (tests/standins/discord.py):
the real discord.py client logs in, connects to the gateway, reads lines, posts replies and
asks to join a voice channel."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest
from discord import opus
from redis.asyncio import Redis

from contracts import ChatIncoming, ChatMessage, Control, Interrupt, Panic, TtsChunk
from contracts.policy import scripted_reply
from contracts.topics import CHAT_INCOMING, CHAT_MESSAGE, CONTROL, POLICY_TOKEN, TTS_CHUNK
from services.bus import BusSettings, Producer, StageRuntime
from services.discord.errors import DiscordIntentError, DiscordStartError, DiscordTokenError
from services.discord.stage import DiscordStage
from services.discord.voice import FRAME_BYTES, SpeechSource
from tests.helpers import read_topic, wait_until
from tests.standins.discord import MANAGE_MESSAGES, DiscordStandIn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@dataclass
class Server:
    """The stand-in's server, as the tests use it."""

    discord: DiscordStandIn
    general: int  # listened to
    random: int  # not listed
    voice: int
    alice: int  # a moderator, sitting in the voice channel
    bob: int
    other_bot: int


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    async with DiscordStandIn() as discord:
        moderators = discord.add_role("Moderators", MANAGE_MESSAGES)
        found = Server(
            discord=discord,
            general=discord.add_text_channel("general"),
            random=discord.add_text_channel("random"),
            voice=discord.add_voice_channel("Stage"),
            alice=discord.add_member("Alice", roles=(moderators,)),
            bob=discord.add_member("Bob"),
            other_bot=discord.add_member("Helper", bot=True),
        )
        discord.seat(found.alice, found.voice)
        for name, value in {
            "TOKEN": discord.token, "CHANNELS": f"[{found.general}]",
            "API_URL": discord.api_url, "START_TIMEOUT_S": "5",
            "VOICE_CONNECT_TIMEOUT_S": "1", "REPLY_INTERVAL_S": "0",
        }.items():  # fmt: skip
            monkeypatch.setenv(f"MARIONETTE_DISCORD_{name}", value)
        yield found


async def incoming(client: Redis, bus: BusSettings) -> list[ChatIncoming]:
    found = await read_topic(client, CHAT_INCOMING, bus.partitions)
    return [m for m in found if isinstance(m, ChatIncoming)]


async def test_lines_in_the_listed_channel_arrive_with_every_field(
    server: Server, bus_settings: BusSettings, redis_client: Redis
) -> None:
    discord = server.discord
    async with StageRuntime(DiscordStage, bus_settings):
        await discord.say(server.random, server.alice, "not listened to")
        await discord.say(server.general, server.other_bot, "a bot's line")
        earlier = await discord.say(server.general, server.bob, "the question was about tea")
        line = await discord.say(
            server.general, server.alice, f"<@{discord.bot_id}> what do you think?",
            mentions=(discord.bot_id,), reply_to=earlier,
        )  # fmt: skip

        async def arrived() -> bool:
            return any(m.platform_message_id == str(line) for m in await incoming(
                redis_client, bus_settings))  # fmt: skip

        await wait_until(arrived, 10, "Alice's line on chat.incoming")
    lines = await incoming(redis_client, bus_settings)
    # discord.py dispatches each event in its own task: lines arrive in any order.
    assert sorted(m.text for m in lines) == ["the question was about tea", "what do you think?"]
    (alice,) = [m for m in lines if m.author == "Alice"]
    assert alice.platform == "discord"
    assert alice.author == "Alice"
    assert alice.author_id == str(server.alice)
    assert alice.badges == ["moderator"]
    assert alice.platform_message_id == str(line)
    assert alice.reply_to == str(earlier)
    assert alice.channel == str(server.general)
    assert alice.mentions_character is True
    assert alice.turn_id == f"discord-{line}"
    assert (alice.session_id, alice.seq) == ("local", 0)
    assert lines[0].badges == []
    assert lines[0].mentions_character is False
    assert discord.requests[:3] == ["GET /users/@me", "GET /oauth2/applications/@me",
                                    "GET /gateway/bot"]  # fmt: skip
    assert discord.transports == ["zlib-stream"]  # what discord.py asked for


async def test_the_answer_to_a_line_is_posted_as_a_reply_to_it(
    server: Server, bus_settings: BusSettings, redis_client: Redis
) -> None:
    discord = server.discord
    async with (
        StageRuntime(DiscordStage, bus_settings),
        Producer(bus_settings, "arbiter", [CHAT_MESSAGE, POLICY_TOKEN]) as arbiter,
    ):
        line = await discord.say(server.general, server.bob, "hello puppet")

        async def arrived() -> bool:
            return bool(await incoming(redis_client, bus_settings))

        await wait_until(arrived, 10, "the line on chat.incoming")
        [line_in] = await incoming(redis_client, bus_settings)
        # As the arbiter does: the line chosen, on chat.message, to be answered.
        chosen = ChatMessage.model_validate(line_in.model_dump(exclude={"created_at"}))
        await arbiter.publish(chosen)
        assert chosen.turn_id is not None
        for token in scripted_reply("local", chosen.turn_id, "Hello Bob! Nice to see you."):
            await arbiter.publish(token)
        await discord.wait_for(lambda: bool(discord.sent))
    [sent] = discord.sent
    assert sent["channel_id"] == server.general
    assert sent["content"] == "Hello Bob! Nice to see you."
    assert int(sent["message_reference"]["message_id"]) == line
    assert sent["allowed_mentions"]["parse"] == []  # never @everyone, whatever it writes


async def test_join_asks_for_the_callers_voice_channel(
    server: Server, bus_settings: BusSettings
) -> None:
    discord = server.discord
    async with StageRuntime(DiscordStage, bus_settings):
        await discord.say(server.general, server.bob, "!join")  # Bob sits in no voice channel
        await discord.say(server.general, server.alice, "!join")
        await discord.wait_for(lambda: bool(discord.voice_state_updates))
        # The voice handshake is not stood in: the join times out, and says so.
        await discord.wait_for(lambda: len(discord.sent) == 2, 5)
    first = discord.voice_state_updates[0]
    assert int(first["guild_id"]) == discord.guild_id
    assert int(first["channel_id"]) == server.voice
    assert first["self_deaf"] is True
    answers = sorted(m["content"] for m in discord.sent)
    assert answers == ["I could not join Stage.", "Join a voice channel first, then say !join."]


async def test_moderator_commands_are_for_moderators(
    server: Server, bus_settings: BusSettings, redis_client: Redis
) -> None:
    discord = server.discord
    async with StageRuntime(DiscordStage, bus_settings):
        await discord.say(server.general, server.bob, "!panic")
        await discord.wait_for(lambda: len(discord.sent) == 1)
        panic = await discord.say(server.general, server.alice, "!panic")

        async def published() -> bool:
            return bool(await read_topic(redis_client, CONTROL, bus_settings.partitions))

        await wait_until(published, 10, "the panic on control")
    assert discord.sent[0]["content"] == "Only moderators can use !panic."
    [control] = await read_topic(redis_client, CONTROL, bus_settings.partitions)
    assert isinstance(control, Control)
    assert control.command == Panic(engaged=True)
    assert control.message_id == f"discord-{panic}:0"
    assert await incoming(redis_client, bus_settings) == []  # commands are no chat lines


async def test_a_seated_bot_speaks_the_sessions_chunks_until_interrupted(
    server: Server, bus_settings: BusSettings
) -> None:
    """Past the voice handshake (not stood in): tts.chunk from Redis as the 48 kHz stereo
    frames discord.py's player reads and encodes, and an interrupt that flushes them."""
    runtime = StageRuntime(DiscordStage, bus_settings)
    async with runtime, Producer(bus_settings, "tts", [TTS_CHUNK, CONTROL]) as tts:
        speech = SpeechSource()
        runtime.stage.seat.speech = speech  # as !join leaves it once connected
        pcm = (np.sin(np.arange(22_050) / 4) * 9000).astype("<i2").tobytes()  # 1 s
        for turn in ["t1", "t2"]:
            await tts.publish(TtsChunk(session_id="local", turn_id=turn, seq=0, index=0,
                                       text="la", sample_rate=22_050, pcm=pcm))  # fmt: skip

        async def queued() -> bool:
            return speech.queued() == 100

        await wait_until(queued, 10, "two chunks of frames")
        first = speech.read()
        packet = opus.Encoder().encode(first, opus.Encoder.SAMPLES_PER_FRAME)
        assert len(first) == FRAME_BYTES
        assert 0 < len(packet) < FRAME_BYTES // 4
        await tts.publish(Control(session_id="local", message_id="skip:0", seq=0,
                                  command=Interrupt(target_turn_id="t1")))  # fmt: skip

        async def flushed() -> bool:
            return speech.queued() == 50

        await wait_until(flushed, 10, "t1's frames flushed")


async def test_a_rejected_token_fails_the_start_naming_the_setting(
    server: Server, bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARIONETTE_DISCORD_TOKEN", "wrong")
    runtime = StageRuntime(DiscordStage, bus_settings)
    try:
        with pytest.raises(DiscordTokenError, match="MARIONETTE_DISCORD_TOKEN"):
            await runtime.start()
    finally:
        await runtime.stop()


async def test_without_the_message_content_intent_the_start_says_how_to_allow_it(
    server: Server, bus_settings: BusSettings
) -> None:
    server.discord.message_content_allowed = False
    runtime = StageRuntime(DiscordStage, bus_settings)
    try:
        with pytest.raises(DiscordIntentError, match="Message Content Intent"):
            await runtime.start()
    finally:
        await runtime.stop()


async def test_no_channels_fails_the_start_naming_the_setting(
    server: Server, bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARIONETTE_DISCORD_CHANNELS", "[]")
    runtime = StageRuntime(DiscordStage, bus_settings)
    try:
        with pytest.raises(DiscordStartError, match="MARIONETTE_DISCORD_CHANNELS"):
            await runtime.start()
    finally:
        await runtime.stop()
    assert server.discord.requests == []  # refused before logging in
