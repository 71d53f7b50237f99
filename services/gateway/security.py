"""Who may do what, and how much: keys, origins, body sizes and rate limits.

- No key configured: the gateway listens on loopback only (settings refuse anything else),
  and whoever can reach it may do everything.
- Keys configured: every request needs one, as `Authorization: Bearer KEY` or `?key=KEY`
  (OBS browser sources cannot set headers). The read key may GET and watch events; the
  operator key may do everything.
- Browsers: a page may call the API or open a WebSocket only from an origin in
  `cors_origins` or from the gateway itself, so a random site cannot drive a local
  character through the visitor's browser.
"""

import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from fastapi import HTTPException, Request, WebSocket
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.settings import GatewaySettings


class Access(IntEnum):
    READ = 1
    OPERATE = 2


def presented_key(headers: Any, query: Any) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return str(token.strip())
    key = query.get("key")
    return str(key) if key else None


def access_of(settings: GatewaySettings, key: str | None) -> Access | None:
    """What a key grants: None when it grants nothing."""
    if not settings.keyed:
        return Access.OPERATE
    if key is None:
        return None
    for secret, grant in (
        (settings.operator_key, Access.OPERATE),
        (settings.read_key, Access.READ),
    ):
        if secret is not None and hmac.compare_digest(key, secret.get_secret_value()):
            return grant
    return None


def check_access(settings: GatewaySettings, headers: Any, query: Any, needed: Access) -> str:
    """The client's identity for rate limits, or an HTTPException (401/403)."""
    key = presented_key(headers, query)
    granted = access_of(settings, key)
    if granted is None:
        detail = "a key is required: send 'Authorization: Bearer KEY' or ?key=KEY" if key is None \
            else "this key is not valid"  # fmt: skip
        raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
    if granted < needed:
        raise HTTPException(403, "this key may only read; this needs the operator key")
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else "local"


def requires(needed: Access) -> Callable[[Request], Awaitable[str]]:
    """A FastAPI dependency: the caller's identity, once its key allows `needed`."""

    async def dependency(request: Request) -> str:
        settings: GatewaySettings = request.app.state.settings
        who = check_access(settings, request.headers, request.query_params, needed)
        host = request.client.host if request.client else "?"
        return f"{who}@{host}"

    return dependency


def origin_allowed(settings: GatewaySettings, origin: str | None, host: str | None) -> bool:
    """A browser's Origin may use the gateway: its own pages, or a listed origin. Clients
    that are not browsers send no Origin."""
    if origin is None:
        return True
    if origin in settings.cors_origins:
        return True
    return host is not None and origin in (f"http://{host}", f"https://{host}")


async def accept_websocket(websocket: WebSocket, needed: Access) -> str | None:
    """Check a WebSocket's origin and key before accepting it; the client's identity, or
    None once it has been refused (closed with 1008 and the reason)."""
    settings: GatewaySettings = websocket.app.state.settings
    origin = websocket.headers.get("origin")
    if not origin_allowed(settings, origin, websocket.headers.get("host")):
        await websocket.close(code=1008, reason=f"origin {origin} is not allowed")
        return None
    try:
        who = check_access(settings, websocket.headers, websocket.query_params, needed)
    except HTTPException as exc:
        await websocket.close(code=1008, reason=str(exc.detail))
        return None
    host = websocket.client.host if websocket.client else "?"
    return f"{who}@{host}"


@dataclass
class _Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class RateLimiter:
    """A token bucket per client and kind of request: `per_minute` requests, in bursts of
    up to a quarter of that (at least one)."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60
        self.burst = max(1.0, per_minute / 4)
        self._buckets: dict[str, _Bucket] = {}

    def take(self, client: str) -> float:
        """0 when allowed; else the seconds until it would be."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(client, _Bucket(self.burst, now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def check(self, client: str, what: str) -> None:
        wait = self.take(client)
        if wait:
            raise HTTPException(
                429, f"too many {what} requests: try again in {wait:.1f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )  # fmt: skip


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is refused with 413 before it is
    read whole (by its Content-Length, or as it streams in). `larger`: paths (regular
    expressions, matched whole) that take bigger bodies: a picture, a memory import."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, larger: Sequence[tuple[str, int]] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = [(re.compile(pattern), limit) for pattern, limit in larger]

    def _limit(self, path: str) -> tuple[int, bool]:
        """The path's limit, and whether it is the setting's (not a route's own)."""
        for pattern, limit in self.larger:
            if pattern.fullmatch(path):
                return max(limit, self.max_bytes), False
        return self.max_bytes, True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, by_setting = self._limit(str(scope.get("path", "")))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit, by_setting)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send, limit, by_setting)

    async def _refuse(self, send: Send, limit: int, by_setting: bool) -> None:
        problem = f"request body over {limit} bytes" + (
            " (MARIONETTE_GATEWAY_MAX_BODY_BYTES)" if by_setting else " (this route's limit)"
        )
        body = json.dumps({"error": problem, "fields": [{"field": "body", "problem": problem}]})
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(Exception):
    pass
