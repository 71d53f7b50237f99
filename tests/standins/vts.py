"""A stand-in for VTube Studio's public API: the JSON-over-WebSocket protocol that
github.com/DenchiSoft/VTubeStudio documents (README.md; error ids from Files/ErrorID.cs).

VTube Studio is a desktop app that cannot run here; this speaks its protocol so the
Marionette client (services.vts.api) and the vts stage are tested end to end. It is a
`websockets` server on 127.0.0.1 (a free port) in the test's event loop:

    async with VtsStandIn() as vts:
        link = VtsLink(vts.url, token_file)
        ...
        vts.revoke_tokens()          # the user revokes the plugin in VTS
        await vts.stop(); await vts.start()   # VTS quits and comes back (same port, tokens)

What it speaks: APIStateRequest, AuthenticationTokenRequest (the "user" answers the popup
at once: Allow, or Deny when allow_plugins is False), AuthenticationRequest,
CurrentModelRequest, HotkeysInCurrentModelRequest, HotkeyTriggerRequest (by id or name,
case-insensitive; a ToggleExpression hotkey toggles its expression), ExpressionStateRequest,
ExpressionActivationRequest, InjectParameterDataRequest (default parameters only; a
parameter set by one session cannot be set by another within the 1 s VTS holds it).
Anything but APIStateRequest and the two authentication requests needs an authenticated
session. What it records: injections, hotkeys_triggered, expression_changes,
token_requests.
"""

import hashlib
import json
import math
import secrets
import time
from enum import IntEnum
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

API_NAME = "VTubeStudioPublicAPI"
API_VERSION = "1.0"
VTS_VERSION = "1.28.15"
Data = dict[str, Any]
HOLD_S = 1.0  # an injected parameter not sent again within this goes back to tracking


class ErrorID(IntEnum):
    """The error ids this stand-in answers with, named as in Files/ErrorID.cs."""

    JSONInvalid = 2
    APINameInvalid = 3
    APIVersionInvalid = 4
    RequestIDInvalid = 5
    RequestTypeMissingOrEmpty = 6
    RequestTypeUnknown = 7
    RequestRequiresAuthetication = 8
    TokenRequestDenied = 50
    TokenRequestPluginNameInvalid = 52
    TokenRequestDeveloperNameInvalid = 53
    AuthenticationTokenMissing = 100
    AuthenticationPluginNameMissing = 101
    AuthenticationPluginDeveloperMissing = 102
    HotkeyExecutionFailedBecauseNoModelLoaded = 201
    HotkeyIDNotFoundInModel = 202
    InjectDataNoDataProvided = 450
    InjectDataValueInvalid = 451
    InjectDataWeightInvalid = 452
    InjectDataParamNameNotFound = 453
    InjectDataParamControlledByOtherPlugin = 454
    InjectDataModeUnknown = 455
    ExpressionActivationRequestInvalidFilename = 650
    ExpressionActivationRequestFileNotFound = 651
    ExpressionActivationRequestNoModelLoaded = 652


# VTube Studio's default input parameters (the manual's parameter table).
# fmt: off
DEFAULT_PARAMETERS = frozenset((
    "FacePositionX", "FacePositionY", "FacePositionZ", "FaceAngleX", "FaceAngleY", "FaceAngleZ",
    "MouthSmile", "MouthOpen", "Brows", "MousePositionX", "MousePositionY", "TongueOut",
    "EyeOpenLeft", "EyeOpenRight", "EyeLeftX", "EyeLeftY", "EyeRightX", "EyeRightY", "CheekPuff",
    "BrowLeftY", "BrowRightY", "MouthX", "FaceAngry", "VoiceFrequency", "VoiceVolume",
    "VoiceVolumePlusMouthOpen", "VoiceFrequencyPlusMouthSmile",
))
# fmt: on
DEFAULT_HOTKEYS = (
    ("Smile", "ToggleExpression", "smile.exp3.json"),
    ("Angry", "ToggleExpression", "angry.exp3.json"),
    ("Wave", "TriggerAnimation", "wave.motion3.json"),
)
DEFAULT_EXPRESSIONS = ("smile.exp3.json", "angry.exp3.json", "sad.exp3.json")


class ApiError(Exception):
    def __init__(self, error_id: ErrorID, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message


class _Session:
    """One plugin connection; VTube Studio authenticates per session."""

    def __init__(self) -> None:
        self.plugin: tuple[str, str] | None = None  # (pluginName, pluginDeveloper) once authed


class VtsStandIn:
    def __init__(
        self,
        hotkeys: list[tuple[str, str, str]] | None = None,
        expressions: list[str] | None = None,
        model_name: str = "Akari",
        allow_plugins: bool = True,
    ) -> None:
        """hotkeys: (name, type, file); expressions: .exp3.json file names; model_name ""
        means no model is loaded; allow_plugins False: the user presses Deny."""
        self.hotkeys = [
            {"name": name, "type": kind, "file": file, "hotkeyID": _id_of(name)}
            for name, kind, file in (DEFAULT_HOTKEYS if hotkeys is None else hotkeys)
        ]
        files = DEFAULT_EXPRESSIONS if expressions is None else expressions
        self.expressions: dict[str, bool] = dict.fromkeys(files, False)  # file -> active
        self.model_name = model_name
        self.allow_plugins = allow_plugins
        self.tokens: dict[str, tuple[str, str]] = {}  # token -> (pluginName, pluginDeveloper)
        self.token_requests = 0
        self.injections: list[tuple[float, dict[str, float]]] = []
        self.hotkeys_triggered: list[tuple[float, str]] = []  # hotkeyID
        self.expression_changes: list[tuple[float, str, bool]] = []
        self.sessions: dict[ServerConnection, _Session] = {}
        self._held: dict[str, tuple[_Session, float]] = {}  # parameter -> (setter, last set)
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "VtsStandIn":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again) on the same port; tokens and state are kept, as VTS keeps them."""
        self._server = await serve(self._serve, "127.0.0.1", self.port, ping_interval=None)
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        """Quit, as VTube Studio closing: every session is closed."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def revoke_tokens(self) -> None:
        """The user revokes every plugin: tokens forgotten, live sessions unauthenticated."""
        self.tokens.clear()
        for session in self.sessions.values():
            session.plugin = None

    def hotkey_id(self, name: str) -> str:
        return next(h["hotkeyID"] for h in self.hotkeys if h["name"] == name)

    def held_parameters(self) -> set[str]:
        """Parameters an API session controls now (set within the last second)."""
        now = time.monotonic()
        return {p for p, (_, at) in self._held.items() if now - at <= HOLD_S}

    async def _serve(self, socket: ServerConnection) -> None:
        session = self.sessions[socket] = _Session()
        try:
            async for raw in socket:
                await socket.send(json.dumps(self._answer(session, raw)))
        except ConnectionClosed:
            pass
        finally:
            del self.sessions[socket]
            self._held = {p: h for p, h in self._held.items() if h[0] is not session}

    def _answer(self, session: _Session, raw: str | bytes) -> Data:
        request_id, kind = secrets.token_hex(16), "APIError"
        try:
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise ApiError(ErrorID.JSONInvalid, "The request is not a JSON object.")
            request_id = message.get("requestID", request_id)
            _check_envelope(message)
            kind = str(message["messageType"])
            handler = getattr(self, f"_on_{kind}", None)
            if handler is None:
                raise ApiError(ErrorID.RequestTypeUnknown, f"Unknown request type: {kind}")
            if session.plugin is None and kind not in _OPEN_REQUESTS:
                raise ApiError(ErrorID.RequestRequiresAuthetication, "Requires authentication.")
            data = handler(session, message.get("data") or {})
            kind = kind.removesuffix("Request") + "Response"
        except ApiError as error:
            kind, data = "APIError", {"errorID": error.error_id, "message": error.message}
        except ValueError:
            kind, data = "APIError", {"errorID": ErrorID.JSONInvalid, "message": "Invalid JSON."}
        return {"apiName": API_NAME, "apiVersion": API_VERSION,
                "timestamp": int(time.time() * 1000), "messageType": kind,
                "requestID": request_id, "data": data}  # fmt: skip

    # -- requests, named _on_<messageType> ------------------------------------------------

    def _on_APIStateRequest(self, session: _Session, data: Data) -> Data:
        return {"active": True, "vTubeStudioVersion": VTS_VERSION,
                "currentSessionAuthenticated": session.plugin is not None}  # fmt: skip

    def _on_AuthenticationTokenRequest(self, _: _Session, data: Data) -> Data:
        name, developer = data.get("pluginName"), data.get("pluginDeveloper")
        if not isinstance(name, str) or not 3 <= len(name) <= 32:
            raise ApiError(ErrorID.TokenRequestPluginNameInvalid, "Plugin name: 3-32 chars.")
        if not isinstance(developer, str) or not 3 <= len(developer) <= 32:
            raise ApiError(ErrorID.TokenRequestDeveloperNameInvalid, "Developer: 3-32 chars.")
        self.token_requests += 1
        if not self.allow_plugins:
            raise ApiError(
                ErrorID.TokenRequestDenied, "User has denied API access for your plugin."
            )
        token = secrets.token_hex(32)
        self.tokens[token] = (name, developer)
        return {"authenticationToken": token}

    def _on_AuthenticationRequest(self, session: _Session, data: Data) -> Data:
        if not data.get("authenticationToken"):
            raise ApiError(ErrorID.AuthenticationTokenMissing, "Authentication token missing.")
        if not data.get("pluginName"):
            raise ApiError(ErrorID.AuthenticationPluginNameMissing, "Plugin name missing.")
        if not data.get("pluginDeveloper"):
            raise ApiError(ErrorID.AuthenticationPluginDeveloperMissing, "Developer missing.")
        plugin = (data["pluginName"], data["pluginDeveloper"])
        if self.tokens.get(data["authenticationToken"]) != plugin:
            session.plugin = None
            return {"authenticated": False, "reason": "Token invalid or revoked by the user."}
        session.plugin = plugin
        return {"authenticated": True, "reason": "Token valid. The plugin is authenticated "
                "for the duration of this session."}  # fmt: skip

    def _on_CurrentModelRequest(self, _: _Session, data: Data) -> Data:
        loaded = bool(self.model_name)
        return {"modelLoaded": loaded, "modelName": self.model_name,
                "modelID": _id_of(self.model_name) if loaded else "",
                "vtsModelName": f"{self.model_name}.vtube.json" if loaded else ""}  # fmt: skip

    def _on_HotkeysInCurrentModelRequest(self, _: _Session, data: Data) -> Data:
        hotkeys = [
            {**h, "description": h["type"], "keyCombination": [], "onScreenButtonID": -1}
            for h in (self.hotkeys if self.model_name else [])
        ]
        return {**self._on_CurrentModelRequest(_, data), "availableHotkeys": hotkeys}

    def _on_HotkeyTriggerRequest(self, _: _Session, data: Data) -> Data:
        if not self.model_name:
            raise ApiError(ErrorID.HotkeyExecutionFailedBecauseNoModelLoaded, "No model loaded.")
        wanted = str(data.get("hotkeyID", ""))
        hotkey = next((h for h in self.hotkeys if h["hotkeyID"] == wanted), None) or next(
            (h for h in self.hotkeys if h["name"] and h["name"].lower() == wanted.lower()), None
        )
        if hotkey is None:
            raise ApiError(ErrorID.HotkeyIDNotFoundInModel, f"Hotkey {wanted!r} not found.")
        self.hotkeys_triggered.append((time.monotonic(), hotkey["hotkeyID"]))
        if hotkey["type"] == "ToggleExpression" and hotkey["file"] in self.expressions:
            self._set_expression(hotkey["file"], not self.expressions[hotkey["file"]])
        return {"hotkeyID": hotkey["hotkeyID"]}

    def _on_ExpressionStateRequest(self, _: _Session, data: Data) -> Data:
        """Every expression of the model (the one-file filter and details are not spoken)."""
        states = self.expressions.items() if self.model_name else []
        expressions = [_expression(file, active) for file, active in states]
        return {**self._on_CurrentModelRequest(_, data), "expressions": expressions}

    def _on_ExpressionActivationRequest(self, _: _Session, data: Data) -> Data:
        file = data.get("expressionFile")
        if not isinstance(file, str) or not file.endswith(".exp3.json"):
            raise ApiError(ErrorID.ExpressionActivationRequestInvalidFilename, "Bad file name.")
        if not self.model_name:
            raise ApiError(ErrorID.ExpressionActivationRequestNoModelLoaded, "No model loaded.")
        if file not in self.expressions:
            raise ApiError(ErrorID.ExpressionActivationRequestFileNotFound, "File not found.")
        self._set_expression(file, bool(data.get("active")))
        return {}

    def _on_InjectParameterDataRequest(self, session: _Session, data: Data) -> Data:
        mode = data.get("mode") or "set"
        if mode not in ("set", "add"):
            raise ApiError(ErrorID.InjectDataModeUnknown, f"Unknown mode {mode!r}: use set or add.")
        entries = data.get("parameterValues")
        if not entries:
            raise ApiError(ErrorID.InjectDataNoDataProvided, "No parameter values provided.")
        now, values = time.monotonic(), {}
        for entry in entries:
            name, value, weight = entry.get("id"), entry.get("value"), entry.get("weight", 1)
            if name not in DEFAULT_PARAMETERS:
                raise ApiError(ErrorID.InjectDataParamNameNotFound, f"Parameter {name} not found.")
            if not _number_within(value, 1_000_000):
                raise ApiError(ErrorID.InjectDataValueInvalid, f"Value for {name} must be within "
                               "-1000000 and 1000000.")  # fmt: skip
            if not _number_within(weight, 1) or weight < 0:
                raise ApiError(ErrorID.InjectDataWeightInvalid, f"Weight for {name} must be 0..1.")
            setter, at = self._held.get(name, (session, now))
            if mode == "set" and setter is not session and now - at <= HOLD_S:
                raise ApiError(ErrorID.InjectDataParamControlledByOtherPlugin,
                               f"Parameter {name} is controlled by another plugin.")  # fmt: skip
            values[name] = float(value)
        if mode == "set":
            self._held.update(dict.fromkeys(values, (session, now)))
        self.injections.append((now, values))
        return {}

    def _set_expression(self, file: str, active: bool) -> None:
        self.expressions[file] = active
        self.expression_changes.append((time.monotonic(), file, active))


_OPEN_REQUESTS = {"APIStateRequest", "AuthenticationTokenRequest", "AuthenticationRequest"}


def _check_envelope(message: dict[str, Any]) -> None:
    if message.get("apiName") != API_NAME:
        raise ApiError(ErrorID.APINameInvalid, "apiName must be VTubeStudioPublicAPI.")
    if message.get("apiVersion") != API_VERSION:
        raise ApiError(ErrorID.APIVersionInvalid, "apiVersion must be 1.0.")
    request_id = message.get("requestID")
    if request_id is not None and not (
        isinstance(request_id, str) and 1 <= len(request_id) <= 64 and request_id.isascii()
    ):
        raise ApiError(ErrorID.RequestIDInvalid, "requestID must be 1-64 ASCII characters.")
    if not message.get("messageType"):
        raise ApiError(ErrorID.RequestTypeMissingOrEmpty, "messageType missing or empty.")


def _number_within(value: object, bound: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and -bound <= value <= bound
    )


def _expression(file: str, active: bool) -> Data:
    return {"name": file.removesuffix(".exp3.json"), "file": file, "active": active,
            "deactivateWhenKeyIsLetGo": False, "autoDeactivateAfterSeconds": False,
            "secondsRemaining": 0, "usedInHotkeys": [], "parameters": []}  # fmt: skip


def _id_of(name: str) -> str:
    """A stable 32-hex id, as VTS gives hotkeys and models."""
    return hashlib.md5(name.encode()).hexdigest()
