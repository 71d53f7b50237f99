"""The discord.py client: logging in, the gateway connection, reading lines, posting replies.

Where discord.py talks to: its REST base is the class attribute `discord.http.Route.BASE`
and a plain Client opens the gateway at `DiscordWebSocket.DEFAULT_GATEWAY` (it never asks
GET /gateway/bot; only AutoShardedClient does). `open_bot` sets both from the settings:
Route.BASE from MARIONETTE_DISCORD_API_URL, and the gateway from
MARIONETTE_DISCORD_GATEWAY_URL or, when that is empty, the URL GET /gateway/bot answers
(Discord's own "wss://gateway.discord.gg", or a stand-in's). Both are process-wide, as a
stage process runs one bot; `close` puts them back.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from services.discord.errors import (
    DiscordIntentError,
    DiscordStartError,
    DiscordTokenError,
    DiscordUnreachable,
)
from services.discord.lines import Line, badges_for
from services.discord.settings import DiscordSettings

log = logging.getLogger("marionette.discord")

AUTHENTICATION_FAILED = 4004  # the gateway's close code for a bad token
DEFAULT_API = Route.BASE
DEFAULT_GATEWAY = DiscordWebSocket.DEFAULT_GATEWAY
REPLY_MENTIONS = discord.AllowedMentions(everyone=False, users=False, roles=False,
                                         replied_user=True)  # fmt: skip
"""What a reply may ping: only the person answered, never @everyone or a role, whatever
the character writes."""

OnMessage = Callable[[discord.Message], Awaitable[None]]


def bot_intents() -> discord.Intents:
    """Servers and their channels, messages with their text (privileged: Message Content
    Intent), and voice states (who sits in which voice channel, for !join)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    intents.voice_states = True
    return intents


class DiscordBot(discord.Client):
    """A discord.py Client that hands every message to `on_line` and knows when the
    gateway's READY has come."""

    def __init__(self, settings: DiscordSettings, on_line: OnMessage) -> None:
        super().__init__(intents=bot_intents(), max_messages=None,
                         allowed_mentions=REPLY_MENTIONS)  # fmt: skip
        self.settings = settings
        self._on_line = on_line
        self.connected = asyncio.Event()
        self.connection: asyncio.Task[None] | None = None

    @property
    def bot_id(self) -> int:
        return self.user.id if self.user is not None else 0

    async def on_connect(self) -> None:
        self.connected.set()

    async def on_message(self, message: discord.Message) -> None:
        await self._on_line(message)

    async def post_reply(self, channel_id: int, message_id: int, text: str) -> None:
        """Post `text` in the channel as a reply to the message (plainly, if it is gone)."""
        channel = self.get_partial_messageable(channel_id)
        reference = discord.MessageReference(
            message_id=message_id, channel_id=channel_id, fail_if_not_exists=False
        )
        await channel.send(text, reference=reference)

    async def close(self) -> None:
        await super().close()
        Route.BASE = DEFAULT_API
        DiscordWebSocket.DEFAULT_GATEWAY = DEFAULT_GATEWAY


async def open_bot(settings: DiscordSettings, on_line: OnMessage) -> DiscordBot:
    """Log in, check the bot may read message text, connect to the gateway and wait for its
    READY; a DiscordStartError (naming the setting to fix) when any of it fails."""
    if not settings.token.strip():
        raise DiscordTokenError.missing()
    Route.BASE = settings.api_url.rstrip("/")
    bot = DiscordBot(settings, on_line)
    try:
        await _log_in(bot, settings)
        await _connect(bot, settings)
    except BaseException:
        with contextlib.suppress(Exception):
            await bot.close()
        if bot.connection is not None:
            bot.connection.cancel()
        raise
    return bot


async def _log_in(bot: DiscordBot, settings: DiscordSettings) -> None:
    try:
        await bot.login(settings.token)
        flags = bot.application_flags
        gateway = settings.gateway_url or (await bot.http.get_bot_gateway())[1]
    except discord.LoginFailure:
        raise DiscordTokenError.rejected(settings.api_url) from None
    except (aiohttp.ClientError, OSError, discord.HTTPException) as exc:
        raise DiscordUnreachable(
            f"cannot reach Discord at {settings.api_url} ({type(exc).__name__}: {exc}); "
            "check the network, or MARIONETTE_DISCORD_API_URL"
        ) from None
    # Discord shows the Message Content toggle as one of these flags (the "limited" one
    # for bots in fewer than 100 servers); without it every line reads as empty.
    if not (flags.gateway_message_content or flags.gateway_message_content_limited):
        raise DiscordIntentError()
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)


async def _connect(bot: DiscordBot, settings: DiscordSettings) -> None:
    bot.connection = asyncio.create_task(bot.connect(reconnect=True), name="discord gateway")
    ready = asyncio.create_task(bot.connected.wait())
    try:
        await asyncio.wait({bot.connection, ready}, timeout=settings.start_timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        ready.cancel()
    if bot.connected.is_set():
        log.info("connected to Discord as %s (%s)", bot.user, bot.bot_id)
        return
    if not bot.connection.done():
        raise DiscordUnreachable(
            f"Discord's gateway ({DiscordWebSocket.DEFAULT_GATEWAY}) sent no READY within "
            f"{settings.start_timeout_s:g} s; check the network, or "
            "MARIONETTE_DISCORD_GATEWAY_URL / MARIONETTE_DISCORD_START_TIMEOUT_S"
        )
    raise _gateway_refusal(bot.connection.exception(), settings)


def _gateway_refusal(exc: BaseException | None, settings: DiscordSettings) -> DiscordStartError:
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return DiscordIntentError()
    if isinstance(exc, discord.ConnectionClosed) and exc.code == AUTHENTICATION_FAILED:
        return DiscordTokenError.rejected(settings.api_url)
    return DiscordUnreachable(f"Discord's gateway closed the connection: {exc!r}")


def line_of(message: discord.Message, bot_id: int) -> Line:
    """The facts of a message that the mapping needs (services.discord.lines)."""
    author = message.author
    member = author if isinstance(author, discord.Member) else None
    guild = message.guild
    channel: Any = message.channel
    manages = False
    if member is not None and hasattr(channel, "permissions_for"):
        manages = bool(channel.permissions_for(member).manage_messages)
    reference = message.reference
    resolved = reference.resolved if reference is not None else None
    badges = badges_for(
        owner=guild is not None and guild.owner_id == author.id,
        manages_messages=manages,
        boosting=member is not None and member.premium_since is not None,
    )
    return Line(
        message_id=message.id,
        channel_id=message.channel.id,
        author_id=author.id,
        author_name=author.display_name,
        content=message.content,
        badges=badges,
        reply_to=reference.message_id if reference is not None else None,
        mentions_bot=any(user.id == bot_id for user in message.mentions),
        replies_to_bot=isinstance(resolved, discord.Message) and resolved.author.id == bot_id,
        users={user.id: user.display_name for user in message.mentions},
        roles={role.id: role.name for role in message.role_mentions},
        channels={c.id: getattr(c, "name", "channel") for c in message.channel_mentions},
    )


def in_channels(message: discord.Message, channels: list[int]) -> bool:
    """Written in a listed channel, or in a thread of one."""
    channel = message.channel
    parent = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
    return channel.id in channels or (parent is not None and parent in channels)
