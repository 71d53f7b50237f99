"""A stand-in for Discord: the REST API and the gateway websocket a bot talks to.

Discord cannot be reached from the tests; this speaks its wire protocol (API v10, JSON
encoding, zlib-stream transport compression as discord.py asks for) so the real discord.py
client and the discord stage are tested end to end:

REST   GET /users/@me, GET /oauth2/applications/@me (login), GET /gateway/bot,
       POST /channels/{id}/messages (recorded in `sent`); a wrong token gets 401.
Gateway  op 10 HELLO; op 2 IDENTIFY -> READY and GUILD_CREATE (channels, roles, members,
       voice states), or close 4004 (bad token) / 4014 (Message Content intent not
       allowed); op 1 HEARTBEAT -> op 11 ACK; op 4 VOICE_STATE_UPDATE recorded and answered
       with the bot's voice state (the voice server and its handshake are not stood in);
       MESSAGE_CREATE dispatched by `say`.
Payload shapes follow Discord's documentation, with the fields discord.py reads.
"""

import asyncio
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1_420_070_400_000
MANAGE_MESSAGES = 1 << 13
EVERYONE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 16) | (1 << 20) | (1 << 21)
"""view channel, send messages, read history, connect, speak."""
MESSAGE_CONTENT_INTENT = 1 << 15
MESSAGE_CONTENT_LIMITED_FLAG = 1 << 19
TIMESTAMP = "2026-01-01T00:00:00.000000+00:00"

_counter = count(1)


def snowflake() -> int:
    """A new id, made as Discord makes them (milliseconds since 2015, then a counter)."""
    return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0xFFF)


@dataclass
class _Session:
    ws: web.WebSocketResponse
    compress: Any  # a zlib compressobj, or None: plain text frames
    seq: int = 0

    async def send(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload)
        if self.compress is None:
            await self.ws.send_str(data)
        else:  # zlib-stream: one deflate stream per connection, flushed at each message
            body = self.compress.compress(data.encode()) + self.compress.flush(zlib.Z_SYNC_FLUSH)
            await self.ws.send_bytes(body)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        await self.send({"op": 0, "t": event, "s": self.seq, "d": data})


@dataclass
class DiscordStandIn:
    token: str = "stand-in-token"
    message_content_allowed: bool = True
    guild_id: int = field(default_factory=snowflake)
    bot_id: int = field(default_factory=snowflake)
    owner_id: int = field(default_factory=snowflake)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    member_roles: dict[int, list[int]] = field(default_factory=dict)
    roles: list[dict[str, Any]] = field(default_factory=list)
    channels: list[dict[str, Any]] = field(default_factory=list)
    voice_states: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)  # POSTed messages, with channel_id
    voice_state_updates: list[dict[str, Any]] = field(default_factory=list)  # op 4 payloads
    identifies: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: int = 0
    transports: list[str] = field(default_factory=list)  # each connection's compress=...
    requests: list[str] = field(default_factory=list)  # "GET /api/v10/users/@me"...
    url: str = ""
    _sessions: list[_Session] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.users[self.bot_id] = _user(self.bot_id, "Marionette", bot=True)
        self.users[self.owner_id] = _user(self.owner_id, "owner")
        self.roles.append(_role(self.guild_id, "@everyone", EVERYONE_PERMISSIONS, 0))

    # --- the server's world ------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v10"

    def add_text_channel(self, name: str) -> int:
        channel_id = snowflake()
        self.channels.append({
            "id": str(channel_id), "type": 0, "guild_id": str(self.guild_id), "name": name,
            "position": len(self.channels), "permission_overwrites": [], "nsfw": False,
            "parent_id": None, "topic": None, "rate_limit_per_user": 0, "last_message_id": None,
        })  # fmt: skip
        return channel_id

    def add_voice_channel(self, name: str) -> int:
        channel_id = snowflake()
        self.channels.append({
            "id": str(channel_id), "type": 2, "guild_id": str(self.guild_id), "name": name,
            "position": len(self.channels), "permission_overwrites": [], "nsfw": False,
            "parent_id": None, "bitrate": 64000, "user_limit": 0, "rtc_region": None,
        })  # fmt: skip
        return channel_id

    def add_role(self, name: str, permissions: int) -> int:
        role_id = snowflake()
        self.roles.append(_role(role_id, name, permissions, len(self.roles)))
        return role_id

    def add_member(self, name: str, *, roles: tuple[int, ...] = (), bot: bool = False) -> int:
        user_id = snowflake()
        self.users[user_id] = _user(user_id, name, bot=bot)
        self.member_roles[user_id] = list(roles)
        return user_id

    def seat(self, user_id: int, voice_channel_id: int) -> None:
        """The user sits in a voice channel (GUILD_CREATE carries it)."""
        self.voice_states.append({
            "channel_id": str(voice_channel_id), "user_id": str(user_id), "session_id": "vs",
            "deaf": False, "mute": False, "self_deaf": False, "self_mute": False,
            "self_video": False, "suppress": False, "request_to_speak_timestamp": None,
        })  # fmt: skip

    async def say(
        self, channel_id: int, author_id: int, content: str, *,
        mentions: tuple[int, ...] = (), reply_to: int | None = None,
    ) -> int:  # fmt: skip
        """A user writes in a channel: MESSAGE_CREATE to every connected bot; its id."""
        message = self._message(channel_id, author_id, content, mentions, reply_to)
        for session in list(self._sessions):
            await session.dispatch("MESSAGE_CREATE", message)
        return int(message["id"])

    async def wait_for(self, what: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError(f"the Discord stand-in timed out after {timeout_s} s")
            await asyncio.sleep(0.02)

    # --- payloads ----------------------------------------------------------------------------

    def _member(self, user_id: int, with_user: bool) -> dict[str, Any]:
        member: dict[str, Any] = {
            "roles": [str(r) for r in self.member_roles.get(user_id, [])], "nick": None,
            "joined_at": TIMESTAMP, "premium_since": None, "deaf": False, "mute": False,
            "flags": 0, "pending": False,
        }  # fmt: skip
        if with_user:
            member["user"] = self.users[user_id]
        return member

    def _message(
        self, channel_id: int, author_id: int, content: str,
        mentions: tuple[int, ...], reply_to: int | None,
    ) -> dict[str, Any]:  # fmt: skip
        message: dict[str, Any] = {
            "id": str(snowflake()), "channel_id": str(channel_id), "guild_id": str(self.guild_id),
            "author": self.users[author_id], "member": self._member(author_id, False),
            "content": content, "timestamp": TIMESTAMP, "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mention_roles": [], "attachments": [], "embeds": [],
            "mentions": [{**self.users[u], "member": self._member(u, False)} for u in mentions],
            "pinned": False, "type": 0, "flags": 0,
        }  # fmt: skip
        if reply_to is not None:
            message["type"] = 19  # REPLY
            message["message_reference"] = {"type": 0, "message_id": str(reply_to),
                                            "channel_id": str(channel_id),
                                            "guild_id": str(self.guild_id)}  # fmt: skip
            message["referenced_message"] = self.messages.get(reply_to)
        self.messages[int(message["id"])] = message
        return message

    def _ready(self) -> dict[str, Any]:
        return {
            "v": 10, "user": self.users[self.bot_id], "session_id": "stand-in-session",
            "resume_gateway_url": self.url + "/gateway", "guilds": [
                {"id": str(self.guild_id), "unavailable": True}],
            "application": {"id": str(self.bot_id), "flags": self._application_flags()},
        }  # fmt: skip

    def _guild(self) -> dict[str, Any]:
        return {
            "id": str(self.guild_id), "name": "Stand-in server", "owner_id": str(self.owner_id),
            "unavailable": False, "large": False, "member_count": len(self.users),
            "joined_at": TIMESTAMP, "roles": self.roles, "channels": self.channels,
            "voice_states": self.voice_states, "threads": [], "emojis": [], "stickers": [],
            "features": [], "stage_instances": [], "guild_scheduled_events": [],
            "soundboard_sounds": [], "presences": [],
            "members": [self._member(user_id, True) for user_id in self.users],
        }  # fmt: skip

    def _application_flags(self) -> int:
        return MESSAGE_CONTENT_LIMITED_FLAG if self.message_content_allowed else 0

    # --- the server --------------------------------------------------------------------------

    async def __aenter__(self) -> "DiscordStandIn":
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in list(self._sessions):
            await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        self.requests.append(f"{request.method} {path}")
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        if request.method == "GET" and path == "/users/@me":
            return _json(self.users[self.bot_id])
        if request.method == "GET" and path == "/oauth2/applications/@me":
            return _json({
                "id": str(self.bot_id), "name": "Marionette", "icon": None, "description": "",
                "bot_public": True, "bot_require_code_grant": False, "verify_key": "00",
                "owner": self.users[self.owner_id], "flags": self._application_flags(),
                "team": None, "summary": "",
            })  # fmt: skip
        if request.method == "GET" and path in ("/gateway/bot", "/gateway"):
            ws_url = self.url.replace("http://", "ws://") + "/gateway"
            return _json(
                {
                    "url": ws_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        parts = path.strip("/").split("/")
        if request.method == "POST" and len(parts) == 3 and parts[::2] == ["channels", "messages"]:
            return _json(await self._post_message(int(parts[1]), request))
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    async def _post_message(self, channel_id: int, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.sent.append({"channel_id": channel_id, **body})
        reference = body.get("message_reference")
        reply_to = int(reference["message_id"]) if reference else None
        return self._message(channel_id, self.bot_id, body.get("content", ""), (), reply_to)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.transports.append(request.query.get("compress", "none"))
        zlib_stream = request.query.get("compress") == "zlib-stream"
        session = _Session(ws, zlib.compressobj() if zlib_stream else None)
        await session.send({"op": 10, "d": {"heartbeat_interval": 41250}})
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                await self._on_gateway(session, json.loads(frame.data))
        finally:
            if session in self._sessions:
                self._sessions.remove(session)
        return ws

    async def _on_gateway(self, session: _Session, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        data: Any = payload.get("d")  # an object, or a number (a heartbeat's sequence)
        if op == 1:
            self.heartbeats += 1
            await session.send({"op": 11})
        elif op == 2:
            self.identifies.append(data)
            if data.get("token") != self.token:
                await session.ws.close(code=4004, message=b"Authentication failed.")
            elif data.get("intents", 0) & MESSAGE_CONTENT_INTENT and not (
                self.message_content_allowed
            ):
                await session.ws.close(code=4014, message=b"Disallowed intent(s).")
            else:
                await session.dispatch("READY", self._ready())
                await session.dispatch("GUILD_CREATE", self._guild())
                self._sessions.append(session)
        elif op == 4:
            self.voice_state_updates.append(data)
            await session.dispatch("VOICE_STATE_UPDATE", self._bot_voice_state(data))

    def _bot_voice_state(self, request: dict[str, Any]) -> dict[str, Any]:
        """Discord's answer to op 4: the bot's new voice state (a leave is confirmed by it;
        a join would also get VOICE_SERVER_UPDATE, the voice server, which is not stood in)."""
        channel = request.get("channel_id")
        return {
            "guild_id": str(request["guild_id"]), "channel_id": None if channel is None
            else str(channel), "user_id": str(self.bot_id), "session_id": "stand-in-voice",
            "deaf": False, "mute": False, "self_deaf": bool(request.get("self_deaf")),
            "self_mute": bool(request.get("self_mute")), "self_video": False,
            "suppress": False, "request_to_speak_timestamp": None,
            "member": self._member(self.bot_id, True),
        }  # fmt: skip


def _json(body: Any, status: int = 200) -> web.Response:
    # Exactly "application/json", as Discord sends: discord.py parses nothing else as JSON
    # (aiohttp's json_response would add "; charset=utf-8").
    return web.Response(body=json.dumps(body).encode(), status=status,
                        headers={"Content-Type": "application/json"})  # fmt: skip


def _user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name,
            "avatar": None, "bot": bot, "public_flags": 0}  # fmt: skip


def _role(role_id: int, name: str, permissions: int, position: int) -> dict[str, Any]:
    return {"id": str(role_id), "name": name, "color": 0, "hoist": False,
            "position": position, "permissions": str(permissions), "managed": False,
            "mentionable": True, "flags": 0}  # fmt: skip
