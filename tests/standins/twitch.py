"""A stand-in for Twitch: its OAuth endpoints, the Helix calls the twitch stage makes, and
the EventSub WebSocket, speaking Twitch's wire protocol (as dev.twitch.tv documents it).

Twitch cannot be reached from the tests; this lets the real twitchio client and the twitch
stage run end to end. It is an aiohttp server on 127.0.0.1 (a free port), in the test's
event loop:

    async with TwitchStandIn() as twitch:
        access, refresh = twitch.issue_token("marionette_bot")
        ... point MARIONETTE_TWITCH_API_URL / _OAUTH_URL / _EVENTSUB_URL at twitch.*_url
        await twitch.wait_subscribed()
        await twitch.send_chat("hello", chatter="viewer")

What it speaks:
- GET /oauth2/validate, POST /oauth2/token (grant_type=client_credentials: an app token;
  grant_type=refresh_token: a new user token pair each time)
- GET /helix/users, POST /helix/eventsub/subscriptions (websocket transport: the session
  must be connected), POST /helix/chat/messages (recorded; the bot's message then comes
  back through EventSub, as on Twitch)
- the EventSub WebSocket: session_welcome (keepalive_timeout_seconds from the query),
  session_keepalive after that many seconds of silence, notification
  (channel.chat.message, version 1), session_reconnect (the reconnect_url keeps the
  session and its subscriptions), close 4003 when nothing was subscribed in time and 4001
  when the client sends anything.
Test controls: send_chat (again with the same message_id: a redelivery), reconnect,
drop (the TCP connection dies, no close frame), expire_tokens (the next call gets 401),
sent (what the bot posted), wait_subscribed.
"""

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

CLIENT_ID = "standin-client-id"
CLIENT_SECRET = "standin-client-secret"
CHAT_SCOPES = ("user:read:chat", "user:write:chat")
EMOTES = {"Kappa": "25", "PogChamp": "305954156", "LUL": "425618"}
"""Global emotes the stand-in recognises in text, with their ids."""


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Account:
    user_id: str
    login: str
    display_name: str


@dataclass
class _Token:
    user_id: str
    scopes: tuple[str, ...]
    client_id: str = CLIENT_ID
    expired: bool = False


@dataclass
class _Session:
    id: str
    socket: web.WebSocketResponse | None = None
    request: web.Request | None = None
    keepalive_s: int = 10
    subscriptions: list[str] = field(default_factory=list)
    last_sent: float = 0.0


@dataclass
class Sent:
    """A message the bot posted (POST /helix/chat/messages)."""

    message_id: str
    broadcaster_id: str
    sender_id: str
    text: str
    reply_parent_message_id: str | None


def fragments_of(text: str, users: dict[str, Account]) -> list[dict[str, Any]]:
    """The text as Twitch splits it: mentions of known users and known emotes apart, the
    rest in text fragments (spaces included)."""
    fragments: list[dict[str, Any]] = []
    plain = ""
    for index, word in enumerate(text.split(" ")):
        spacer = " " if index else ""
        mentioned = users.get(word[1:].lower()) if word.startswith("@") else None
        if mentioned is None and word not in EMOTES:
            plain += spacer + word
            continue
        plain += spacer
        if plain:
            fragments.append(_fragment("text", plain))
            plain = ""
        if mentioned is not None:
            mention = {"user_id": mentioned.user_id, "user_login": mentioned.login,
                       "user_name": mentioned.display_name}  # fmt: skip
            fragments.append(_fragment("mention", word, mention=mention))
        else:
            emote = {"id": EMOTES[word], "emote_set_id": "0", "owner_id": "0",
                     "format": ["static"]}  # fmt: skip
            fragments.append(_fragment("emote", word, emote=emote))
    if plain:
        fragments.append(_fragment("text", plain))
    return fragments


def _fragment(kind: str, text: str, **detail: Any) -> dict[str, Any]:
    return {"type": kind, "text": text, "cheermote": None, "emote": None, "mention": None,
            **detail}  # fmt: skip


def chat_event(
    *,
    broadcaster: Account,
    chatter: Account,
    text: str,
    message_id: str,
    badges: Sequence[str] = (),
    reply_to: dict[str, Any] | None = None,
    users: dict[str, Account] | None = None,
) -> dict[str, Any]:
    """A channel.chat.message event, every field as Twitch sends it. `reply_to`: the
    parent line's event (then the text starts with '@parent ', as Twitch writes it)."""
    reply = None
    if reply_to is not None:
        text = f"@{reply_to['chatter_user_login']} {text}"
        reply = {
            "parent_message_id": reply_to["message_id"],
            "parent_message_body": reply_to["message"]["text"],
            "parent_user_id": reply_to["chatter_user_id"],
            "parent_user_name": reply_to["chatter_user_name"],
            "parent_user_login": reply_to["chatter_user_login"],
            "thread_message_id": reply_to["message_id"],
            "thread_user_id": reply_to["chatter_user_id"],
            "thread_user_name": reply_to["chatter_user_name"],
            "thread_user_login": reply_to["chatter_user_login"],
        }
    known = users or {a.login: a for a in (broadcaster, chatter)}
    return {
        "broadcaster_user_id": broadcaster.user_id,
        "broadcaster_user_login": broadcaster.login,
        "broadcaster_user_name": broadcaster.display_name,
        "source_broadcaster_user_id": None,
        "source_broadcaster_user_login": None,
        "source_broadcaster_user_name": None,
        "chatter_user_id": chatter.user_id,
        "chatter_user_login": chatter.login,
        "chatter_user_name": chatter.display_name,
        "message_id": message_id,
        "source_message_id": None,
        "is_source_only": None,
        "message": {"text": text, "fragments": fragments_of(text, known)},
        "color": "#00FF7F",
        "badges": [{"set_id": b, "id": "1", "info": ""} for b in badges],
        "source_badges": None,
        "message_type": "text",
        "cheer": None,
        "reply": reply,
        "channel_points_custom_reward_id": None,
        "channel_points_animation_id": None,
    }


def _error(status: int, message: str) -> web.Response:
    reasons = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               409: "Conflict"}  # fmt: skip
    return web.json_response(
        {"error": reasons.get(status, "Error"), "status": status, "message": message},
        status=status,
    )


class TwitchStandIn:
    """The stand-in server and its test controls (see the module docstring)."""

    def __init__(self, *, channel: str = "streamer", bot: str = "marionette_bot") -> None:
        self.users: dict[str, Account] = {}
        for number, login in enumerate((channel, bot, "viewer", "mod_mia", "vip_val"), 1):
            self.users[login] = Account(str(1000 + number), login, login.title())
        self.channel = self.users[channel]
        self.bot = self.users[bot]
        self.tokens: dict[str, _Token] = {}
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> access token it renews
        self.sessions: dict[str, _Session] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}  # chat message id -> its event
        self.sent: list[Sent] = []
        self.refreshes = 0
        self.connections = 0
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0
        self._changed = asyncio.Condition()

    # --- addresses ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/helix/"

    @property
    def oauth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def eventsub_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    # --- test controls -------------------------------------------------------------------

    def issue_token(
        self, login: str, scopes: tuple[str, ...] = CHAT_SCOPES, client_id: str = CLIENT_ID
    ) -> tuple[str, str]:
        """A user access token and its refresh token for an account."""
        access, refresh = secrets.token_hex(15), secrets.token_hex(25)
        self.tokens[access] = _Token(self.users[login].user_id, scopes, client_id)
        self.refresh_tokens[refresh] = access
        return access, refresh

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired: the next call with one gets 401."""
        for token in self.tokens.values():
            token.expired = True

    async def wait_subscribed(self, made: int = 1, timeout_s: float = 10.0) -> None:
        """Until `made` subscriptions were made in all (a dropped session's client makes one
        again on its new session) and the newest is live."""

        def enough() -> bool:
            made_so_far = list(self.subscriptions.values())
            return len(made_so_far) >= made and made_so_far[-1]["status"] == "enabled"

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(enough), timeout_s)

    async def send_chat(
        self,
        text: str,
        *,
        chatter: str = "viewer",
        badges: Sequence[str] = (),
        reply_to: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """A chat line in the channel, notified to every subscribed session; with the
        message_id of an earlier line it is that line delivered again (same notification
        id too). Returns the chat message id."""
        if message_id is not None and message_id in self.events:
            event = self.events[message_id]
        else:
            parent = self.events[reply_to] if reply_to else None
            event = chat_event(
                broadcaster=self.channel, chatter=self.users[chatter], text=text,
                message_id=message_id or str(uuid.uuid4()), badges=badges, reply_to=parent,
                users=self.users,
            )  # fmt: skip
            self.events[event["message_id"]] = event
        await self._notify(event)
        return str(event["message_id"])

    async def reconnect(self) -> None:
        """Ask every connected session to move (session_reconnect with a reconnect_url)."""
        for session in list(self.sessions.values()):
            url = f"{self.eventsub_url}?reconnect={session.id}"
            payload = {"session": {"id": session.id, "status": "reconnecting",
                                   "keepalive_timeout_seconds": None, "reconnect_url": url,
                                   "connected_at": _now()}}  # fmt: skip
            await self._send(session, "session_reconnect", payload)

    async def drop(self) -> None:
        """Kill every EventSub connection as a network fault would: no close frame."""
        for session in list(self.sessions.values()):
            if session.request is not None and session.request.transport is not None:
                session.request.transport.abort()

    # --- the server ----------------------------------------------------------------------

    async def __aenter__(self) -> "TwitchStandIn":
        app = web.Application()
        app.router.add_get("/oauth2/validate", self._validate)
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_get("/helix/users", self._users)
        app.router.add_post("/helix/eventsub/subscriptions", self._subscribe)
        app.router.add_post("/helix/chat/messages", self._chat_message)
        app.router.add_get("/ws", self._websocket)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        for session in list(self.sessions.values()):
            if session.socket is not None:
                with contextlib.suppress(Exception):
                    await session.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- OAuth ---------------------------------------------------------------------------

    async def _validate(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        token = self.tokens.get(header.removeprefix("OAuth ").removeprefix("Bearer "))
        if token is None or token.expired:
            return web.json_response({"status": 401, "message": "invalid access token"},
                                     status=401)  # fmt: skip
        if not token.user_id:  # an app token: no user
            return web.json_response({"client_id": token.client_id, "scopes": [],
                                      "expires_in": 5_000_000})  # fmt: skip
        user = self._user_by_id(token.user_id)
        return web.json_response({
            "client_id": token.client_id, "login": user.login, "scopes": list(token.scopes),
            "user_id": user.user_id, "expires_in": 14_000,
        })  # fmt: skip

    async def _token(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        params.update({k: str(v) for k, v in (await request.post()).items()})
        if params.get("client_id") != CLIENT_ID:
            return _error(400, "invalid client")
        if params.get("client_secret") != CLIENT_SECRET:
            return _error(403, "invalid client secret")
        if params.get("grant_type") == "client_credentials":
            app_token = secrets.token_hex(15)
            self.tokens[app_token] = _Token("", ())
            return web.json_response({"access_token": app_token, "expires_in": 5_000_000,
                                      "token_type": "bearer"})  # fmt: skip
        if params.get("grant_type") != "refresh_token":
            return _error(400, "unsupported grant type")
        old_access = self.refresh_tokens.pop(params.get("refresh_token", ""), None)
        if old_access is None:
            return _error(400, "Invalid refresh token")
        old = self.tokens[old_access]
        access, refresh = self.issue_token(self._user_by_id(old.user_id).login, old.scopes)
        self.refreshes += 1
        return web.json_response({
            "access_token": access, "refresh_token": refresh, "expires_in": 14_000,
            "scope": list(old.scopes), "token_type": "bearer",
        })  # fmt: skip

    # --- Helix ---------------------------------------------------------------------------

    def _authorised(self, request: web.Request, *, user: bool = True) -> _Token | web.Response:
        """The call's token; an error response for a missing, expired or app token (user)."""
        header = request.headers.get("Authorization", "")
        token = self.tokens.get(header.removeprefix("Bearer "))
        if not header.startswith("Bearer ") or token is None or token.expired:
            return _error(401, "Invalid OAuth token")
        if request.headers.get("Client-Id") != token.client_id:
            return _error(401, "Client ID and OAuth token do not match")
        if user and not token.user_id:
            return _error(401, "this call needs a user access token, not an app token")
        return token

    async def _users(self, request: web.Request) -> web.Response:
        token = self._authorised(request, user=False)
        if isinstance(token, web.Response):
            return token
        logins, ids = request.query.getall("login", []), request.query.getall("id", [])
        found = [u for u in self.users.values() if u.login in logins or u.user_id in ids]
        if not logins and not ids:
            if not token.user_id:
                return _error(400, "an app token must name the users (login or id)")
            found = [self._user_by_id(token.user_id)]
        return web.json_response({"data": [{
            "id": u.user_id, "login": u.login, "display_name": u.display_name, "type": "",
            "broadcaster_type": "", "description": "", "profile_image_url": "",
            "offline_image_url": "", "view_count": 0, "created_at": "2020-01-01T00:00:00Z",
        } for u in found]})  # fmt: skip

    async def _subscribe(self, request: web.Request) -> web.Response:
        token = self._authorised(request)
        if isinstance(token, web.Response):
            return token
        body = await request.json()
        condition = body.get("condition", {})
        transport = body.get("transport", {})
        if (body.get("type"), body.get("version")) != ("channel.chat.message", "1"):
            return _error(400, "unsupported subscription type or version")
        if transport.get("method") != "websocket":
            return _error(400, "this stand-in speaks websocket transport only")
        session = self.sessions.get(transport.get("session_id", ""))
        if session is None or session.socket is None:
            return _error(400, "websocket transport session does not exist or has already "
                          "disconnected")  # fmt: skip
        if condition.get("user_id") != token.user_id:
            return _error(403, "subscription condition user_id must be the token's user")
        if "user:read:chat" not in token.scopes:
            return _error(403, "subscription missing proper authorization")
        if condition.get("broadcaster_user_id") != self.channel.user_id:
            return _error(400, "unknown broadcaster_user_id")
        subscription = {
            "id": str(uuid.uuid4()), "status": "enabled", "type": body["type"],
            "version": body["version"], "condition": condition, "created_at": _now(),
            "transport": {"method": "websocket", "session_id": session.id,
                          "connected_at": _now()},
            "cost": 0,
        }  # fmt: skip
        self.subscriptions[subscription["id"]] = subscription
        session.subscriptions.append(subscription["id"])
        await self._changed_now()
        return web.json_response(
            {"data": [subscription], "total": len(self.subscriptions), "total_cost": 0,
             "max_total_cost": 10},
            status=202,
        )  # fmt: skip

    async def _chat_message(self, request: web.Request) -> web.Response:
        token = self._authorised(request)
        if isinstance(token, web.Response):
            return token
        body = await request.json()
        if "user:write:chat" not in token.scopes:
            return _error(401, "Missing scope: user:write:chat")
        if body.get("sender_id") != token.user_id:
            return _error(403, "The sender must be the user the token belongs to")
        if body.get("broadcaster_id") != self.channel.user_id:
            return _error(400, "unknown broadcaster_id")
        text = str(body.get("message", ""))
        if not text or len(text) > 500:
            return _error(400, "The message must be 1 to 500 characters")
        parent = body.get("reply_parent_message_id")
        if parent is not None and parent not in self.events:
            return _error(400, "The reply parent message does not exist")
        message_id = str(uuid.uuid4())
        self.sent.append(Sent(message_id, body["broadcaster_id"], token.user_id, text, parent))
        # As on Twitch, the bot's own message is a chat message of the channel too.
        event = chat_event(
            broadcaster=self.channel, chatter=self._user_by_id(token.user_id), text=text,
            message_id=message_id, reply_to=self.events[parent] if parent else None,
            users=self.users,
        )  # fmt: skip
        self.events[message_id] = event
        self._spawn(self._notify(event))
        await self._changed_now()
        return web.json_response(
            {"data": [{"message_id": message_id, "is_sent": True, "drop_reason": None}]}
        )

    def _user_by_id(self, user_id: str) -> Account:
        return next(u for u in self.users.values() if u.user_id == user_id)

    # --- EventSub WebSocket --------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.connections += 1
        moving = self.sessions.get(request.query.get("reconnect", ""))
        session = moving or _Session(id="AQoQ" + secrets.token_urlsafe(18))
        if moving is None:
            wanted = int(request.query.get("keepalive_timeout_seconds", "10"))
            session.keepalive_s = min(max(wanted, 10), 600)
            self.sessions[session.id] = session
        session.socket, session.request = socket, request
        welcome = {"session": {"id": session.id, "status": "connected",
                               "keepalive_timeout_seconds": session.keepalive_s,
                               "reconnect_url": None, "connected_at": _now()}}  # fmt: skip
        await self._send(session, "session_welcome", welcome)
        keepalive = self._spawn(self._keep_alive(session, socket))
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:  # clients may not send: Twitch closes
                    await socket.close(code=4001, message=b"client sent inbound traffic")
        finally:
            keepalive.cancel()
            if session.socket is socket:  # not moved to a reconnect_url: the session ends
                self._end(session)
        return socket

    async def _keep_alive(self, session: _Session, socket: web.WebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not socket.closed:
            await asyncio.sleep(1.0)
            if session.socket is not socket:
                continue  # moved: the new connection keeps the session alive
            if not session.subscriptions and loop.time() - started > session.keepalive_s:
                await socket.close(code=4003, message=b"connection unused")
                return
            if loop.time() - session.last_sent >= session.keepalive_s:
                await self._send(session, "session_keepalive", {})

    def _end(self, session: _Session) -> None:
        self.sessions.pop(session.id, None)
        for sub_id in session.subscriptions:  # Twitch disables them with the session
            self.subscriptions[sub_id]["status"] = "websocket_disconnected"
        session.socket = None
        self._spawn(self._changed_now())

    async def _notify(self, event: dict[str, Any]) -> None:
        notification_id = str(uuid.uuid5(uuid.NAMESPACE_URL, event["message_id"]))
        for session in list(self.sessions.values()):
            for sub_id in session.subscriptions:
                subscription = self.subscriptions[sub_id]
                payload = {"subscription": subscription, "event": event}
                await self._send(session, "notification", payload, message_id=notification_id,
                                 subscription=subscription)  # fmt: skip

    async def _send(
        self,
        session: _Session,
        kind: str,
        payload: dict[str, Any],
        *,
        message_id: str | None = None,
        subscription: dict[str, Any] | None = None,
    ) -> None:
        socket = session.socket
        if socket is None or socket.closed:
            return
        metadata = {"message_id": message_id or str(uuid.uuid4()), "message_type": kind,
                    "message_timestamp": _now()}  # fmt: skip
        if subscription is not None:
            metadata["subscription_type"] = subscription["type"]
            metadata["subscription_version"] = subscription["version"]
        session.last_sent = asyncio.get_running_loop().time()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await socket.send_json({"metadata": metadata, "payload": payload})

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _changed_now(self) -> None:
        async with self._changed:
            self._changed.notify_all()
