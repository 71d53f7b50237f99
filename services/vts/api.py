"""A client for VTube Studio's public API: a WebSocket (ws://localhost:8001 by default) that
speaks JSON messages, as github.com/DenchiSoft/VTubeStudio documents them.

Every message is an envelope: {"apiName": "VTubeStudioPublicAPI", "apiVersion": "1.0",
"requestID", "messageType", "data"}. A response carries the request's requestID and the
matching "...Response" type, or "APIError" with {errorID, message} (ids: Files/ErrorID.cs).

A plugin must authenticate each session. The first time, AuthenticationTokenRequest makes
VTube Studio show the user a popup ("allow plugin Marionette?"); Allow answers with a token
that is saved and reused for every later session (AuthenticationRequest), so the user is
asked once. The user can revoke the plugin at any time; the link then asks again.
"""

import asyncio
import contextlib
import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

log = logging.getLogger("marionette.vts")

API_NAME = "VTubeStudioPublicAPI"
API_VERSION = "1.0"

# Error ids from Files/ErrorID.cs (the misspelling "Authetication" is VTube Studio's own).
REQUEST_REQUIRES_AUTHENTICATION = 8  # RequestRequiresAuthetication
TOKEN_REQUEST_DENIED = 50  # TokenRequestDenied: also answers every request once revoked


class VtsError(Exception):
    """Anything that went wrong talking to VTube Studio."""


class VtsUnavailable(VtsError):
    """Cannot reach VTube Studio (is it running, with Settings > Start API on, port 8001?) or
    the connection dropped. Also raised when a request gets no answer in time."""


class VtsApiError(VtsError):
    """VTube Studio answered a request with an APIError."""

    def __init__(self, error_id: int, message: str, message_type: str) -> None:
        super().__init__(f"VTube Studio refused {message_type}: {message} (errorID {error_id})")
        self.error_id = error_id
        self.message = message
        self.message_type = message_type


class VtsAccessDenied(VtsError):
    """The user pressed Deny on the plugin dialog (or revoked it and denied again)."""


@dataclass(frozen=True)
class Hotkey:
    name: str
    type: str  # ToggleExpression, TriggerAnimation, ... (Files/HotkeyAction.cs)
    file: str  # the expression/animation/model file, "" for other types
    hotkey_id: str


@dataclass(frozen=True)
class Expression:
    name: str  # the file name without .exp3.json
    file: str
    active: bool


class VtsLink:
    """One authenticated session with VTube Studio. `connect()` again after it dropped."""

    def __init__(
        self,
        url: str,
        token_file: Path,
        *,
        plugin_name: str = "Marionette",
        plugin_developer: str = "Marionette",
        request_timeout_s: float = 5.0,
        token_wait_s: float = 120.0,
    ) -> None:
        self.url = url
        self.token_file = token_file
        self.plugin_name = plugin_name
        self.plugin_developer = plugin_developer
        self.request_timeout_s = request_timeout_s
        self.token_wait_s = token_wait_s
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._authenticated = False
        self._auth_lock = asyncio.Lock()
        self._auth_round = 0  # counts (re-)authentications, so concurrent requests share one

    # -- connection ---------------------------------------------------------------------

    async def connect(self) -> str:
        """Open the session and authenticate; returns the loaded model's name ("" if none)."""
        await self.close()
        try:
            self._socket = await connect(
                self.url, open_timeout=self.request_timeout_s, max_size=None
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as error:
            raise VtsUnavailable(
                f"cannot reach VTube Studio at {self.url} ({error}); is it running, with "
                "Settings > Start API on and that port?"
            ) from error
        self._reader = asyncio.create_task(self._read(self._socket), name="vts-reader")
        try:
            async with self._auth_lock:
                await self._authenticate()
            model = await self.request("CurrentModelRequest")
        except BaseException:
            await self.close()
            raise
        name = str(model.get("modelName") or "") if model.get("modelLoaded") else ""
        log.info("VTube Studio: connected, model %s", repr(name) if name else "(none loaded)")
        return name

    @property
    def connected(self) -> bool:
        return self._authenticated and self._reader is not None and not self._reader.done()

    async def wait_closed(self) -> None:
        """Return when the connection is gone (VTube Studio closed, or `close()`)."""
        if self._reader is not None:
            await asyncio.shield(self._reader)

    async def close(self) -> None:
        socket, reader = self._socket, self._reader
        self._socket = None
        self._authenticated = False
        if socket is not None:
            await socket.close()
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, socket: ClientConnection) -> None:
        """Hand each response to the request waiting for its requestID (any order)."""
        try:
            async for raw in socket:
                try:
                    message = json.loads(raw)
                    waiter = self._pending.pop(str(message.get("requestID")), None)
                except (ValueError, AttributeError):
                    log.warning("VTube Studio sent something that is not a JSON object")
                    continue
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
                # anything else: an event, or the answer to a request that timed out
        except ConnectionClosed:
            pass
        finally:
            self._authenticated = False
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(VtsUnavailable("the VTube Studio connection dropped"))
            self._pending.clear()
            if self._socket is socket:
                log.warning("VTube Studio: the connection closed")

    # -- requests -----------------------------------------------------------------------

    async def request(
        self, message_type: str, data: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send one request; returns the response's data. An APIError raises VtsApiError.

        When VTube Studio says the session is no longer authenticated (the user revoked the
        plugin while we were connected), authenticate again once and retry.
        """
        auth_round = self._auth_round
        try:
            return await self._exchange(message_type, data, timeout_s)
        except VtsApiError as error:
            if error.error_id not in (REQUEST_REQUIRES_AUTHENTICATION, TOKEN_REQUEST_DENIED):
                raise
            log.warning("VTube Studio: %s; authenticating again", error.message)
        async with self._auth_lock:
            if self._auth_round == auth_round:  # nobody else re-authenticated meanwhile
                self._authenticated = False
                await self._authenticate()
        return await self._exchange(message_type, data, timeout_s)

    async def _exchange(
        self, message_type: str, data: dict[str, Any] | None, timeout_s: float | None
    ) -> dict[str, Any]:
        socket = self._socket
        if socket is None or self._reader is None or self._reader.done():
            raise VtsUnavailable("not connected to VTube Studio")
        request_id = f"marionette-{next(self._ids)}"
        envelope = {
            "apiName": API_NAME,
            "apiVersion": API_VERSION,
            "requestID": request_id,
            "messageType": message_type,
            "data": data or {},
        }
        # allow_nan=False: NaN is not JSON, and VTube Studio would refuse the whole message.
        text = json.dumps(envelope, allow_nan=False)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        try:
            await socket.send(text)
            response = await asyncio.wait_for(waiter, timeout)
        except ConnectionClosed as error:
            raise VtsUnavailable("the VTube Studio connection dropped") from error
        except TimeoutError as error:
            raise VtsUnavailable(
                f"VTube Studio did not answer {message_type} within {timeout:g} s"
            ) from error
        finally:
            self._pending.pop(request_id, None)
        body = response.get("data") or {}
        if response.get("messageType") == "APIError":
            raise VtsApiError(
                int(body.get("errorID", -1)), str(body.get("message", "")), message_type
            )
        return dict(body)

    # -- authentication -----------------------------------------------------------------

    async def _authenticate(self) -> None:
        """Authenticate this session: the saved token, else a new one the user allows."""
        self._auth_round += 1
        token = self._load_token()
        if token:
            authenticated, reason = await self._authenticate_with(token)
            if authenticated:
                log.info("VTube Studio: authenticated with the saved token")
                return
            log.warning("VTube Studio refused the saved token (%s); asking for a new one", reason)
            self.token_file.unlink(missing_ok=True)
        token = await self._request_token()
        self._save_token(token)
        authenticated, reason = await self._authenticate_with(token)
        if not authenticated:
            raise VtsAccessDenied(f"VTube Studio refused the token it just granted: {reason}")
        log.info("VTube Studio: plugin allowed; token saved to %s", self.token_file)

    async def _authenticate_with(self, token: str) -> tuple[bool, str]:
        data = await self._exchange(
            "AuthenticationRequest",
            {
                "pluginName": self.plugin_name,
                "pluginDeveloper": self.plugin_developer,
                "authenticationToken": token,
            },
            None,
        )
        self._authenticated = bool(data.get("authenticated"))
        return self._authenticated, str(data.get("reason", ""))

    async def _request_token(self) -> str:
        log.warning(
            "VTube Studio: asking for plugin access; allow %s in VTube Studio's popup "
            "(waiting up to %g s)",
            self.plugin_name,
            self.token_wait_s,
        )
        retry = (
            f"allow '{self.plugin_name}' in VTube Studio (Settings > General > Plugins) and "
            "start again"
        )
        try:
            data = await self._exchange(
                "AuthenticationTokenRequest",
                {"pluginName": self.plugin_name, "pluginDeveloper": self.plugin_developer},
                self.token_wait_s,
            )
        except VtsApiError as error:
            if error.error_id == TOKEN_REQUEST_DENIED:
                raise VtsAccessDenied(
                    f"VTube Studio denied access to the plugin ({error.message}): {retry}"
                ) from error
            raise
        except VtsUnavailable as error:
            if self._socket is None or self._reader is None or self._reader.done():
                raise
            raise VtsAccessDenied(
                f"nobody answered VTube Studio's plugin popup within {self.token_wait_s:g} s: "
                f"{retry}"
            ) from error
        token = str(data.get("authenticationToken") or "")
        if not token:
            raise VtsApiError(-1, "no authenticationToken in the answer", "AuthenticationToken")
        return token

    def _load_token(self) -> str:
        try:
            return self.token_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as error:
            log.warning("cannot read the VTube Studio token %s (%s)", self.token_file, error)
            return ""

    def _save_token(self, token: str) -> None:
        """Write the token readable by its owner only (it lets anyone drive the avatar)."""
        self.token_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.token_file.with_name(self.token_file.name + ".partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(token + "\n")
        os.chmod(partial, 0o600)  # O_CREAT's mode does not apply to a file that existed
        os.replace(partial, self.token_file)

    # -- what Marionette does -----------------------------------------------------------

    async def hotkeys(self) -> list[Hotkey]:
        """The hotkeys of the loaded model (none when no model is loaded)."""
        data = await self.request("HotkeysInCurrentModelRequest")
        return [
            Hotkey(
                name=str(item.get("name", "")),
                type=str(item.get("type", "")),
                file=str(item.get("file", "")),
                hotkey_id=str(item.get("hotkeyID", "")),
            )
            for item in data.get("availableHotkeys") or []
        ]

    async def expressions(self) -> list[Expression]:
        """The loaded model's expressions and whether each is active."""
        data = await self.request("ExpressionStateRequest", {"details": False})
        return [
            Expression(
                name=str(item.get("name", "")),
                file=str(item.get("file", "")),
                active=bool(item.get("active")),
            )
            for item in data.get("expressions") or []
        ]

    async def trigger_hotkey(self, hotkey_id: str) -> None:
        """Run a hotkey of the loaded model, by its id (or its name, case-insensitive)."""
        await self.request("HotkeyTriggerRequest", {"hotkeyID": hotkey_id})

    async def set_expression(self, file: str, active: bool, fade_s: float = 0.25) -> None:
        """Turn an expression (its .exp3.json file) on or off; VTS clamps fade_s to 0..2."""
        await self.request(
            "ExpressionActivationRequest",
            {"expressionFile": file, "active": active, "fadeTime": fade_s},
        )

    async def inject(self, values: dict[str, float], *, face_found: bool = False) -> None:
        """Set tracking parameters (MouthOpen, MouthSmile, ...). VTube Studio gives a
        parameter back to face tracking when it is not sent again within a second."""
        await self.request(
            "InjectParameterDataRequest",
            {
                "faceFound": face_found,
                "mode": "set",
                "parameterValues": [{"id": key, "value": value} for key, value in values.items()],
            },
        )
