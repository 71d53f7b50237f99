"""discord: a Discord bot for the character.

In: lines written in the listed channels (not by bots) go on chat.incoming, where the
arbiter chooses what is answered. Out: a turn that answers a Discord line (its
chat.message names the channel and message) gets its final reply posted back there, as a
reply. Voice: `!join` seats the bot in the caller's voice channel, where it speaks the
session's tts.chunk audio until `!leave`; an interrupt or a panic silences it at once.
The discord.py client runs as the stage's background work, as the gateway runs its server.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from contracts import ChatMessage, Control, Interrupt, Panic, PolicyToken, TtsChunk
from contracts.control import Command as ControlCommand
from contracts.envelope import Envelope
from contracts.topics import CHAT_INCOMING, CHAT_MESSAGE, CONTROL, POLICY_TOKEN, TTS_CHUNK
from services.bus import Bus, Checkpointed, Publishes, Stage, consumes
from services.bus.fencing import Fenced
from services.bus.redis_bus import BusNotRunning
from services.discord.client import DiscordBot, in_channels, line_of, open_bot
from services.discord.errors import DiscordTokenError, no_channels
from services.discord.lines import (
    MODERATOR_COMMANDS,
    Command,
    chat_line_for,
    parse_command,
    turn_id_for,
)
from services.discord.replies import AnsweredLine, ReplyPacer, shorten_reply
from services.discord.settings import DiscordSettings
from services.discord.voice import VoiceSeat
from services.settings import load_settings

log = logging.getLogger("marionette.discord")

OWNERSHIP_WAIT_S = 5.0
"""How long a line waits for this replica to own its session's partition (the bot can
hear a line before the runtime has taken its leases); past that, another replica owns the
session, and its own bot connection publishes the same line under the same ids."""


class DiscordStage(Stage):
    name = "discord"
    interruptible = True  # an interrupt silences the voice at once (on_interrupt)
    lines = Publishes(CHAT_INCOMING)
    commands = Publishes(CONTROL)  # !skip, !panic
    answering = Checkpointed(AnsweredLine)  # per turn: the Discord line it answers

    def __init__(self, settings: DiscordSettings, bus: Bus, bot: DiscordBot | None = None) -> None:
        super().__init__(bus)
        self.settings = settings
        self.bot = bot
        self.seat = VoiceSeat(settings.voice_connect_timeout_s)
        self.pacer = ReplyPacer(settings.reply_burst, settings.reply_interval_s)
        self.speaking_turn: str | None = None  # the session's newest reply (what !skip stops)

    @classmethod
    async def build(cls, bus: Bus) -> "DiscordStage":
        settings = load_settings(DiscordSettings)
        if not settings.token.strip():
            raise DiscordTokenError.missing()
        if not settings.channels:
            raise no_channels()
        stage = cls(settings, bus)
        stage.bot = await open_bot(settings, stage.on_discord_message)
        return stage

    async def background(self) -> None:
        """Keep the gateway connection until the stage stops, then close the client."""
        bot = self.bot
        if bot is None or bot.connection is None:
            return
        try:
            await asyncio.shield(bot.connection)  # a stop cancels this wait, not the client
        except Exception:
            log.exception("the Discord connection ended")
        finally:
            await self.close()

    async def close(self) -> None:
        if self.bot is None:
            return
        await self.seat.leave()
        await asyncio.wait_for(self.bot.close(), 5)
        if self.bot.connection is not None:
            self.bot.connection.cancel()

    # --- the bus -----------------------------------------------------------------------------

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        """A line the character will answer: if it is a Discord line, remember where."""
        if not self.settings.reply or message.platform != "discord" or message.turn_id is None:
            return
        channel, line = message.channel or "", message.platform_message_id or ""
        if not (channel.isdigit() and line.isdigit()):
            return  # a line of another bridge, or not a Discord snowflake
        where = AnsweredLine(channel_id=int(channel), message_id=int(line))
        self.answering.save(message.session_id, message.turn_id, where)

    # while_off: a reply ending while the stage is off still forgets where it would have gone.
    @consumes(POLICY_TOKEN, drop_interrupted=False, while_off=True)
    async def on_token(self, token: PolicyToken) -> None:
        if token.session_id == self.settings.session_id and token.turn_id is not None:
            self.speaking_turn = token.turn_id
        if not token.final or token.turn_id is None:
            return
        where = await self.answering.load(token.session_id, token.turn_id)
        if where is None:
            return
        self.answering.forget(token.session_id, token.turn_id)
        text = (token.reply_text or "").strip()
        if token.status != "ok" or not text or self.bus.switched_off() or self.bot is None:
            return
        await self.pacer.wait(where.channel_id)
        reply = shorten_reply(text, self.settings.reply_max_chars)
        await self.bot.post_reply(where.channel_id, where.message_id, reply)

    @consumes(TTS_CHUNK)
    async def on_chunk(self, chunk: TtsChunk) -> None:
        if chunk.session_id != self.settings.session_id or chunk.turn_id is None:
            return
        self.speaking_turn = chunk.turn_id
        self.seat.feed(chunk.turn_id, chunk.pcm, chunk.sample_rate)

    @consumes(CONTROL)
    async def on_control(self, message: Control) -> None:
        if isinstance(message.command, Panic) and message.command.engaged:
            self.seat.flush()

    async def on_interrupt(self, session_id: str, turn_id: str) -> None:
        if session_id == self.settings.session_id:
            self.seat.flush(turn_id)

    # --- Discord -------------------------------------------------------------------------------

    async def on_discord_message(self, message: discord.Message) -> None:
        """Every message the bot sees: a command, a line for chat.incoming, or nothing."""
        bot = self.bot
        if bot is None or message.author.bot or message.author.id == bot.bot_id:
            return
        if message.guild is None or not in_channels(message, self.settings.channels):
            return
        command = parse_command(message.content, self.settings.command_prefix)
        if command is not None:
            await self.run_command(command, message)
            return
        if self.bus.switched_off():
            return  # panic or the module switched off: no input taken
        line = chat_line_for(line_of(message, bot.bot_id), self.settings.session_id,
                                bot.bot_id)  # fmt: skip
        if line is not None:
            await self._publish_owned(self.lines.publish, line)

    async def run_command(self, command: Command, message: discord.Message) -> None:
        if command.name in MODERATOR_COMMANDS and not self._moderates(message):
            await self._answer(message, f"Only moderators can use {self._named(command)}.")
            return
        handlers: dict[str, Callable[[Command, discord.Message], Awaitable[None]]] = {
            "join": self._join, "leave": self._leave, "skip": self._skip, "panic": self._panic,
        }  # fmt: skip
        await handlers[command.name](command, message)

    async def _join(self, command: Command, message: discord.Message) -> None:
        if not self.settings.voice:
            await self._answer(message, "Voice is switched off here.")
            return
        voice = getattr(message.author, "voice", None)
        channel = voice.channel if voice is not None else None
        if not isinstance(channel, discord.VoiceChannel | discord.StageChannel):
            await self._answer(message, f"Join a voice channel first, then say "
                                        f"{self._named(command)}.")  # fmt: skip
            return
        try:
            await self.seat.join(channel)
        except (TimeoutError, discord.ClientException, RuntimeError) as exc:
            log.warning("could not join voice channel %s: %r", channel.id, exc)
            await self._answer(message, f"I could not join {channel.name}.")

    async def _leave(self, command: Command, message: discord.Message) -> None:
        if not await self.seat.leave():
            await self._answer(message, "I am not in a voice channel.")

    async def _skip(self, command: Command, message: discord.Message) -> None:
        if self.speaking_turn is None:
            await self._answer(message, "Nothing to skip.")
            return
        skip = Interrupt(target_turn_id=self.speaking_turn, reason="discord_skip")
        await self._publish_owned(self.commands.publish, self._control(message, skip))

    async def _panic(self, command: Command, message: discord.Message) -> None:
        engaged = command.argument.lower() not in ("off", "stop", "end")
        panic = Panic(engaged=engaged)
        await self._publish_owned(self.commands.publish, self._control(message, panic))

    def _control(self, message: discord.Message, command: ControlCommand) -> Control:
        # The command's message id is its Discord message's: a redelivery is dropped.
        return Control(session_id=self.settings.session_id, seq=0, command=command,
                       message_id=f"{turn_id_for(message.id)}:0")  # fmt: skip

    def _named(self, command: Command) -> str:
        return f"{self.settings.command_prefix}{command.name}"

    @staticmethod
    def _moderates(message: discord.Message) -> bool:
        guild, author, channel = message.guild, message.author, message.channel
        if guild is not None and guild.owner_id == author.id:
            return True
        if not isinstance(author, discord.Member) or not hasattr(channel, "permissions_for"):
            return False
        return bool(channel.permissions_for(author).manage_messages)

    @staticmethod
    async def _answer(message: discord.Message, text: str) -> None:
        try:
            await message.reply(text, mention_author=False)
        except discord.HTTPException as exc:
            log.warning("could not answer a command in %s: %s", message.channel.id, exc)

    async def _publish_owned(
        self, publish: Callable[[Any], Awaitable[Any]], message: Envelope
    ) -> bool:
        """Publish from outside a handler: wait (a little) for the runtime to own the
        session's partition; False when another replica owns it."""
        deadline = time.monotonic() + OWNERSHIP_WAIT_S
        while True:
            try:
                await publish(message)
                return True
            except (Fenced, BusNotRunning) as exc:
                if time.monotonic() > deadline:
                    log.info("not published (%s): %s", message.message_id, exc)
                    return False
                await asyncio.sleep(0.1)
