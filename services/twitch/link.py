"""The stage's connection to Twitch, through twitchio 3.

twitchio does the protocol: token validation and refresh (ManagedHTTPClient: a 401
"invalid oauth token" refreshes the token and retries the call), the EventSub WebSocket
(welcome, keepalive watch, `session_reconnect` to the given reconnect_url, a dropped
socket reconnected with backoff and its subscriptions made again), the event models and
the Helix calls. This module chooses the URLs, turns failures into errors a person can
act on, and hands chat lines to the stage.

Pointing twitchio elsewhere (the stand-in in tests, a proxy): its URLs are module-level,
not options. `Route.BASE` (Helix) and `Route.ID_BASE` (OAuth) are class attributes of
twitchio.http.Route, and the EventSub address is twitchio.eventsub.websockets.WSS; the
stage sets all three from its settings before it connects (one stage per process, so one
set of URLs).
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import twitchio
import twitchio.client
import twitchio.eventsub.websockets as twitchio_websockets
from twitchio.eventsub import ChatMessageSubscription
from twitchio.exceptions import HTTPException, InvalidTokenException, WebsocketConnectionException
from twitchio.http import Route

from services.twitch.auth import (
    HOW_TO_GET_A_TOKEN,
    READ_SCOPE,
    WRITE_SCOPE,
    Tokens,
    TwitchAuthError,
    check_settings,
    save_tokens,
    starting_tokens,
)
from services.twitch.chat_in import TwitchLine
from services.twitch.settings import TwitchSettings

log = logging.getLogger("marionette.twitch")

SEND_TIMEOUT_S = 10.0
SUBSCRIBE_RETRY_S = (1.0, 30.0)  # first wait, longest wait (doubling between)


class TwitchUnreachable(RuntimeError):
    """Twitch did not answer at start; not a setting to fix, so the stage is restarted."""


def point_twitchio_at(settings: TwitchSettings) -> None:
    """Set twitchio's module-level base URLs from the settings (see the module docstring)."""
    Route.BASE = settings.api_url
    Route.ID_BASE = settings.oauth_url
    twitchio_websockets.WSS = settings.eventsub_url


class _Websocket(twitchio_websockets.Websocket):
    """twitchio's EventSub socket, with one fix (twitchio 3.3.2).

    After a `session_reconnect` the new socket has the old one's session id (Twitch keeps
    it), and the old socket's cleanup removed that id from the client's table: the new
    socket was forgotten and never closed. This cleanup removes only itself."""

    def _cleanup(self, closed: bool = True) -> None:
        self._closed = closed
        client = self._client
        if client is None or self._token_for is None:
            return
        sockets = client._websockets.get(self._token_for, {})
        for session_id, socket in list(sockets.items()):
            if socket is self:
                del sockets[session_id]


# Both the module that makes reconnect sockets and the client's import of it.
twitchio_websockets.Websocket = _Websocket  # type: ignore[misc]
twitchio.client.Websocket = _Websocket  # type: ignore[attr-defined]


class _ChatClient(twitchio.Client):
    """A twitchio Client that hands chat lines on and keeps refreshed tokens."""

    def __init__(
        self, settings: TwitchSettings, on_line: Callable[[TwitchLine], None], **options: Any
    ) -> None:
        super().__init__(
            client_id=settings.client_id,
            client_secret=settings.client_secret.get_secret_value() or None,
            **options,
        )
        self.settings = settings
        self.on_line = on_line

    async def event_message(self, payload: twitchio.ChatMessage) -> None:
        # twitchio runs each listener in a task of its own; the stage queues the line
        # before anything here awaits, so lines keep their order.
        self.on_line(TwitchLine.from_event(payload))

    async def event_token_refreshed(self, payload: twitchio.TokenRefreshedPayload) -> None:
        log.info("twitch: token refreshed for user %s; kept in %s", payload.user_id,
                 self.settings.token_file)  # fmt: skip
        save_tokens(self.settings, payload.user_id, Tokens(payload.token, payload.refresh_token))


class TwitchLink:
    """A validated connection: who the bot is, which channel, and the client to reach it."""

    def __init__(
        self,
        settings: TwitchSettings,
        client: _ChatClient,
        *,
        bot_id: str,
        bot_login: str,
        broadcaster_id: str,
        can_write: bool,
    ) -> None:
        self.settings = settings
        self.client = client
        self.bot_id = bot_id
        self.bot_login = bot_login
        self.broadcaster_id = broadcaster_id
        self.can_write = can_write
        self.subscribed = asyncio.Event()

    @classmethod
    async def connect(
        cls, settings: TwitchSettings, on_line: Callable[[TwitchLine], None]
    ) -> "TwitchLink":
        """Validate the token (refreshing it if Twitch says it expired) and find the channel.
        TwitchAuthError for what a setting must fix; TwitchUnreachable if Twitch is away."""
        check_settings(settings)
        point_twitchio_at(settings)
        # No web adapter: the stage needs no OAuth callback server of twitchio's own.
        client = _ChatClient(settings, on_line, fetch_client_user=False)
        try:
            return await cls._validated(settings, client)
        except BaseException:
            await client.close(save_tokens=False)
            raise

    @classmethod
    async def _validated(cls, settings: TwitchSettings, client: _ChatClient) -> "TwitchLink":
        try:
            # twitchio's way: an app token (client credentials) beside the users' tokens. It
            # proves the client id and secret now, not at the first refresh hours later.
            await client.login(load_tokens=False, save_tokens=False)
        except HTTPException as exc:
            if exc.status in (400, 401, 403):
                raise TwitchAuthError(_application_refused(exc)) from None
            raise TwitchUnreachable(f"twitch: {settings.oauth_url} answered {exc}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TwitchUnreachable(
                f"twitch: cannot reach Twitch at {settings.oauth_url}: {exc}"
            ) from None
        tokens = starting_tokens(settings)
        try:
            valid = await client.add_token(tokens.access, tokens.refresh)
        except InvalidTokenException as exc:
            raise TwitchAuthError(_refused(settings, exc)) from None
        except (HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TwitchUnreachable(
                f"twitch: cannot validate the token at {settings.oauth_url}: {exc}"
            ) from None
        user_id, login = valid.user_id or "", valid.login or ""
        if not user_id:
            raise TwitchAuthError(
                "MARIONETTE_TWITCH_ACCESS_TOKEN is an app token; the bot needs a user token: "
                + HOW_TO_GET_A_TOKEN
            )
        if valid.client_id != settings.client_id:
            raise TwitchAuthError(
                f"MARIONETTE_TWITCH_CLIENT_ID={settings.client_id!r}, but the access token was "
                f"issued to the application {valid.client_id!r}: set the Client ID of the "
                "application the token was made with"
            )
        if settings.bot_id and settings.bot_id != user_id:
            raise TwitchAuthError(
                f"MARIONETTE_TWITCH_BOT_ID={settings.bot_id!r}, but the access token is "
                f"{login!r}'s (user id {user_id}): set MARIONETTE_TWITCH_BOT_ID={user_id} or "
                "leave it empty"
            )
        scopes = set(valid.scopes)
        needed = {READ_SCOPE} | ({WRITE_SCOPE} if settings.reply_in_chat else set())
        if not needed <= scopes:
            missing = " ".join(sorted(needed - scopes))
            raise TwitchAuthError(
                f"MARIONETTE_TWITCH_ACCESS_TOKEN lacks the scope {missing}: {HOW_TO_GET_A_TOKEN}"
            )
        stored = client.tokens.get(user_id)
        if stored is not None:
            save_tokens(settings, user_id, Tokens(stored["token"], stored["refresh"]))
        broadcaster_id = await cls._channel_id(settings, client, user_id)
        log.info("twitch: bot %s (%s) reads #%s (%s)", login, user_id, settings.channel,
                 broadcaster_id)  # fmt: skip
        return cls(
            settings, client, bot_id=user_id, bot_login=login, broadcaster_id=broadcaster_id,
            can_write=WRITE_SCOPE in scopes,
        )  # fmt: skip

    @staticmethod
    async def _channel_id(settings: TwitchSettings, client: _ChatClient, bot_id: str) -> str:
        try:
            users = await client.fetch_users(logins=[settings.channel], token_for=bot_id)
        except (HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TwitchUnreachable(
                f"twitch: cannot look up #{settings.channel} at {settings.api_url}: {exc}"
            ) from None
        if not users:
            raise TwitchAuthError(
                f"MARIONETTE_TWITCH_CHANNEL={settings.channel!r}: Twitch has no such user; set "
                "it to the channel's login (the name in twitch.tv/<login>)"
            )
        return str(users[0].id)

    async def run(self) -> None:
        """Subscribe to the channel's chat over EventSub, retrying until it works, then stay
        connected (twitchio reconnects the socket) until cancelled; closes the client."""
        wait_s = SUBSCRIBE_RETRY_S[0]
        subscription = ChatMessageSubscription(
            broadcaster_user_id=self.broadcaster_id, user_id=self.bot_id
        )
        try:
            while not self.subscribed.is_set():
                try:
                    await self.client.subscribe_websocket(subscription, token_for=self.bot_id)
                    self.subscribed.set()
                    log.info("twitch: reading the chat of #%s", self.settings.channel)
                except (HTTPException, WebsocketConnectionException, aiohttp.ClientError,
                        OSError, TimeoutError) as exc:  # fmt: skip
                    log.warning("twitch: cannot subscribe to chat (%s); again in %.0f s",
                                exc, wait_s)  # fmt: skip
                    await asyncio.sleep(wait_s)
                    wait_s = min(wait_s * 2, SUBSCRIBE_RETRY_S[1])
            await asyncio.Event().wait()  # until the stage stops
        finally:
            await self.close()

    async def send(self, text: str, reply_to: str | None) -> bool:
        """Post a chat message as the bot (a reply when reply_to is given); False if Twitch
        did not take it (logged)."""
        channel = self.client.create_partialuser(self.broadcaster_id)
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                sent = await channel.send_message(
                    text, self.bot_id, token_for=self.bot_id, reply_to_message_id=reply_to
                )
        except (HTTPException, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("twitch: message not sent: %s", exc)
            return False
        if not sent.sent:
            log.warning("twitch: Twitch dropped the message: %s (%s)", sent.dropped_message,
                        sent.dropped_code)  # fmt: skip
        return bool(sent.sent)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close(save_tokens=False)


def _application_refused(exc: HTTPException) -> str:
    said = str(exc.extra.get("message", "")).lower()
    setting = (
        "MARIONETTE_TWITCH_CLIENT_ID"
        if "client" in said and "secret" not in said
        else ("MARIONETTE_TWITCH_CLIENT_SECRET")
    )
    return (
        f"{setting} was refused by Twitch ({said or exc.status}): set the Client ID and a "
        "current Client Secret of your application (dev.twitch.tv/console/apps, Manage; "
        "'New Secret' makes a new one)"
    )


def _refused(settings: TwitchSettings, exc: InvalidTokenException) -> str:
    missing = [
        name
        for name, value in (
            ("MARIONETTE_TWITCH_REFRESH_TOKEN", settings.refresh_token.get_secret_value()),
            ("MARIONETTE_TWITCH_CLIENT_SECRET", settings.client_secret.get_secret_value()),
        )
        if not value
    ]
    why = f" ({' and '.join(missing)} not set, so it cannot be refreshed)" if missing else ""
    return (
        f"MARIONETTE_TWITCH_ACCESS_TOKEN was refused by Twitch: invalid or expired, and "
        f"refreshing it failed{why}: {HOW_TO_GET_A_TOKEN}"
    )
