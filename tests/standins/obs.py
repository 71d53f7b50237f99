"""A stand-in for OBS Studio's obs-websocket v5 server (protocol level).

OBS cannot run in the tests; this speaks obs-websocket 5.5's wire protocol so the real
simpleobsws client and `services.obs.link.ObsLink` are tested end to end:

Subprotocols  `obswebsocket.json` (text frames; also when none is asked) and
              `obswebsocket.msgpack` (binary frames).
Handshake     Hello (op 0, with an auth challenge when a password is set); Identify (op 1)
              checked with the real algorithm, else close 4009; Identified (op 2).
              Anything but Identify first closes 4007; a second Identify closes 4008.
Requests      op 6 -> op 7 with real status codes (100, 204, 300, 600): see `_handle`;
              types in `stall` are recorded and never answered (a hung OBS).
Events        op 5 to clients subscribed to the event's category (all but the high-volume
              ones when Identify names none): CurrentProgramSceneChanged,
              InputMuteStateChanged, SourceFilterEnableStateChanged,
              SceneItemEnableStateChanged, and ExitStarted on `stop()`.

State is a small OBS: scenes of scene items (ids, enabled), inputs (settings, muted),
filters (enabled) and the program scene. As in OBS, every source placed in a scene that
is not a scene is an input. Every request is recorded in `requests`.
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack  # type: ignore[import-untyped, unused-ignore]
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

JSON = Subprotocol("obswebsocket.json")
MSGPACK = Subprotocol("obswebsocket.msgpack")
OBS_VERSION = "31.0.0"
OBS_WEBSOCKET_VERSION = "5.5.2"
GENERAL, SCENES, INPUTS, FILTERS, SCENE_ITEMS = 1 << 0, 1 << 2, 1 << 3, 1 << 5, 1 << 7
ALL_EVENTS = (1 << 11) - 1  # General .. Ui: every category but the high-volume ones
NO_SCENE_ITEMS = "No scene items were found in the specified scene by that name or offset."
SUCCESS, UNKNOWN_REQUEST_TYPE, MISSING_REQUEST_FIELD, RESOURCE_NOT_FOUND = 100, 204, 300, 600


class Recorded(NamedTuple):
    at: float  # time.monotonic() on arrival
    request_type: str
    request_data: dict[str, Any]


@dataclass
class SceneItem:
    item_id: int
    source: str
    enabled: bool = True


@dataclass
class Input:
    settings: dict[str, Any]
    muted: bool = False

    @property
    def kind(self) -> str:
        return "text_ft2_source_v2" if "text" in self.settings else "stand_in_source"


class _Refused(Exception):
    def __init__(self, code: int, comment: str) -> None:
        super().__init__(comment)
        self.code, self.comment = code, comment


@dataclass(eq=False)
class _Session:
    ws: ServerConnection
    binary: bool
    auth: dict[str, str] | None
    identified: bool = False
    subscriptions: int = ALL_EVENTS

    async def send(self, op: int, data: dict[str, Any]) -> None:
        frame = {"op": op, "d": data}
        await self.ws.send(msgpack.packb(frame) if self.binary else json.dumps(frame))


def _not_found(comment: str) -> _Refused:
    return _Refused(RESOURCE_NOT_FOUND, comment)


def _field(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise _Refused(MISSING_REQUEST_FIELD, f"Your request is missing the `{name}` field.")
    return data[name]


def _select_subprotocol(_: ServerConnection, offered: Any) -> Subprotocol | None:
    # obs-websocket takes msgpack or json when offered and defaults to json otherwise.
    return next((p for p in offered if p in (MSGPACK, JSON)), None)


@dataclass
class ObsStandIn:
    password: str | None = "secret"
    scenes: dict[str, list[str]] = field(
        default_factory=lambda: {
            "Main": ["Character", "Captions"],
            "Talking": ["Character", "Captions"],
            "BRB": ["BRB Card"],
        }
    )
    inputs: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"Character Audio": {}, "Captions": {"text": ""}}
    )
    filters: dict[tuple[str, str], bool] = field(
        default_factory=lambda: {("Character", "Glow"): False}
    )
    stall: set[str] = field(default_factory=set)  # request types recorded, never answered
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._item_ids = iter(range(1, 1 << 31))
        self.scene_items: dict[str, list[SceneItem]] = {
            scene: [SceneItem(next(self._item_ids), source) for source in sources]
            for scene, sources in self.scenes.items()
        }
        self.input_state = {name: Input(dict(s)) for name, s in self.inputs.items()}
        for sources in self.scenes.values():
            for source in sources:
                if source not in self.scenes and source not in self.input_state:
                    self.input_state[source] = Input({})
        self.program_scene = next(iter(self.scenes))
        self._server: Server | None = None
        self._sessions: set[_Session] = set()
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "ObsStandIn":
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on 127.0.0.1, on the same port as before if started already."""
        self._server = await serve(
            self._serve, "127.0.0.1", self.port, subprotocols=[MSGPACK, JSON],
            select_subprotocol=_select_subprotocol,
        )  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Quit as OBS does: ExitStarted, then close every connection and the server."""
        if self._server is None:
            return
        await self.emit("ExitStarted", None, GENERAL)
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()

    async def wait_for(
        self,
        predicate: Callable[[Recorded], bool],
        timeout: float = 2.0,  # noqa: ASYNC109 (what tests read best)
    ) -> Recorded:
        """The first recorded request (already here or still to come) matching predicate."""

        def found() -> Recorded | None:
            return next((r for r in self.requests if predicate(r)), None)

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), timeout)
            except TimeoutError:
                seen = [r.request_type for r in self.requests]
                raise TimeoutError(f"no matching request in {timeout} s; seen {seen}") from None
        match = found()
        assert match is not None
        return match

    async def emit(self, event_type: str, data: dict[str, Any] | None, category: int) -> None:
        """Send an event to every identified client subscribed to its category."""
        event: dict[str, Any] = {"eventType": event_type, "eventIntent": category}
        if data is not None:
            event["eventData"] = data
        for session in list(self._sessions):
            if session.identified and session.subscriptions & category:
                with contextlib.suppress(ConnectionClosed):
                    await session.send(5, event)

    async def _serve(self, ws: ServerConnection) -> None:
        auth = None
        if self.password is not None:
            auth = {"challenge": secrets.token_urlsafe(32), "salt": secrets.token_urlsafe(32)}
        session = _Session(ws, binary=ws.subprotocol == MSGPACK, auth=auth)
        self._sessions.add(session)
        hello = {"obsStudioVersion": OBS_VERSION, "obsWebSocketVersion": OBS_WEBSOCKET_VERSION,
                 "rpcVersion": 1} | ({"authentication": auth} if auth else {})  # fmt: skip
        try:
            await session.send(0, hello)
            async for frame in ws:
                if (close := await self._receive(session, frame)) is not None:
                    await ws.close(*close)
                    return
        except ConnectionClosed:
            pass
        finally:
            self._sessions.discard(session)

    async def _receive(self, session: _Session, frame: str | bytes) -> tuple[int, str] | None:
        """Handle one frame; return (close code, reason) when the session must end."""
        if isinstance(frame, bytes) != session.binary:
            return 4002, "The frame type does not match the session's encoding."
        try:
            message = msgpack.unpackb(frame) if session.binary else json.loads(frame)
            op, data = message["op"], message["d"]
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            return 4002, "The message could not be decoded."
        if op == 1:
            if session.identified:
                return 4008, "You are already Identified with the obs-websocket server."
            if data.get("rpcVersion") != 1:
                return 4010, "Your requested RPC version is not supported by this server."
            if session.auth is not None and data.get("authentication") != self._expected_auth(
                session.auth
            ):
                return 4009, "Authentication failed."
            session.subscriptions = int(data.get("eventSubscriptions", ALL_EVENTS))
            session.identified = True
            await session.send(2, {"negotiatedRpcVersion": 1})
            return None
        if not session.identified:
            return 4007, "You attempted to send a non-Identify message while not identified."
        if op != 6:
            return 4006, f"Unknown OpCode: {op}"
        await self._request(session, data)
        return None

    def _expected_auth(self, auth: dict[str, str]) -> str:
        assert self.password is not None
        secret = base64.b64encode(hashlib.sha256((self.password + auth["salt"]).encode()).digest())
        digest = hashlib.sha256(secret + auth["challenge"].encode()).digest()
        return base64.b64encode(digest).decode()

    async def _request(self, session: _Session, message: dict[str, Any]) -> None:
        request_type, data = message["requestType"], message.get("requestData") or {}
        async with self._arrived:
            self.requests.append(Recorded(time.monotonic(), request_type, data))
            self._arrived.notify_all()
        if request_type in self.stall:
            return
        events: list[tuple[str, dict[str, Any], int]] = []
        status: dict[str, Any] = {"result": True, "code": SUCCESS}
        answer: dict[str, Any] = {"requestType": request_type, "requestId": message["requestId"]}
        try:
            if response := self._handle(request_type, data, events):
                answer["responseData"] = response
        except _Refused as refused:
            status = {"result": False, "code": refused.code, "comment": refused.comment}
        await session.send(7, {**answer, "requestStatus": status})
        for event_type, event_data, category in events:
            await self.emit(event_type, event_data, category)

    def _handle(self, kind: str, data: dict[str, Any], events: list[Any]) -> dict[str, Any]:
        """Carry out one request on the state; return its responseData ({}: none)."""
        match kind:
            case "GetVersion":
                return {"obsVersion": OBS_VERSION, "obsWebSocketVersion": OBS_WEBSOCKET_VERSION,
                        "rpcVersion": 1, "availableRequests": REQUEST_TYPES,
                        "supportedImageFormats": [], "platform": "stand-in"}  # fmt: skip
            case "GetCurrentProgramScene":  # sceneName since 5.3, the older name kept
                scene = self.program_scene
                return {"sceneName": scene, "currentProgramSceneName": scene}
            case "SetCurrentProgramScene":
                scene = _field(data, "sceneName")
                self._scene(scene)
                if scene != self.program_scene:
                    self.program_scene = scene
                    events.append(("CurrentProgramSceneChanged", {"sceneName": scene}, SCENES))
            case "GetSceneList":  # as obs-websocket: bottom scene first, sceneIndex 0 there
                count = len(self.scene_items)
                listed = [{"sceneIndex": count - 1 - i, "sceneName": name}
                          for i, name in enumerate(self.scene_items)]  # fmt: skip
                return {"currentProgramSceneName": self.program_scene,
                        "currentPreviewSceneName": None, "scenes": listed[::-1]}  # fmt: skip
            case "GetInputList":
                return {"inputs": [
                    {"inputName": name, "inputKind": item.kind, "unversionedInputKind": item.kind}
                    for name, item in self.input_state.items()
                    if data.get("inputKind") in (None, item.kind)
                ]}  # fmt: skip
            case "SetInputSettings":
                item, settings = self._input(data), _field(data, "inputSettings")
                if data.get("overlay", True):
                    item.settings.update(settings)
                else:
                    item.settings = dict(settings)
            case "GetInputSettings":
                item = self._input(data)
                return {"inputSettings": dict(item.settings), "inputKind": item.kind}
            case "SetInputMute":
                item, muted = self._input(data), bool(_field(data, "inputMuted"))
                if item.muted != muted:
                    item.muted = muted
                    event = {"inputName": data["inputName"], "inputMuted": muted}
                    events.append(("InputMuteStateChanged", event, INPUTS))
            case "GetInputMute":
                return {"inputMuted": self._input(data).muted}
            case "SetSourceFilterEnabled":
                source, name = _field(data, "sourceName"), _field(data, "filterName")
                enabled = bool(_field(data, "filterEnabled"))
                if source not in self.input_state and source not in self.scene_items:
                    raise _not_found(f"No source was found by the name of `{source}`.")
                if (source, name) not in self.filters:
                    raise _not_found(
                        f"No filter was found in the source `{source}` named `{name}`."
                    )
                self.filters[(source, name)] = enabled
                event = {"sourceName": source, "filterName": name, "filterEnabled": enabled}
                events.append(("SourceFilterEnableStateChanged", event, FILTERS))
            case "GetSceneItemId":
                source, offset = _field(data, "sourceName"), int(data.get("searchOffset", 0))
                found = [item for item in self._scene(data) if item.source == source]
                if offset >= len(found):
                    raise _not_found(NO_SCENE_ITEMS)
                return {"sceneItemId": found[offset].item_id}
            case "SetSceneItemEnabled":
                scene_item, enabled = self._item(data), bool(_field(data, "sceneItemEnabled"))
                scene_item.enabled = enabled
                event = {"sceneName": data["sceneName"], "sceneItemId": scene_item.item_id,
                         "sceneItemEnabled": enabled}  # fmt: skip
                events.append(("SceneItemEnableStateChanged", event, SCENE_ITEMS))
            case "GetSceneItemEnabled":
                return {"sceneItemEnabled": self._item(data).enabled}
            case _:
                raise _Refused(UNKNOWN_REQUEST_TYPE, "Your request type is not valid.")
        return {}

    def _scene(self, data: dict[str, Any] | str) -> list[SceneItem]:
        name = data if isinstance(data, str) else _field(data, "sceneName")
        if name not in self.scene_items:
            raise _not_found(f"No source was found by the name of `{name}`.")
        return self.scene_items[name]

    def _input(self, data: dict[str, Any]) -> Input:
        name = _field(data, "inputName")
        if name not in self.input_state:
            raise _not_found(f"No source was found by the name of `{name}`.")
        return self.input_state[name]

    def _item(self, data: dict[str, Any]) -> SceneItem:
        item_id = _field(data, "sceneItemId")
        for item in self._scene(data):
            if item.item_id == item_id:
                return item
        scene = data["sceneName"]
        raise _not_found(f"No scene items were found in scene `{scene}` with the ID `{item_id}`.")

    def readd_scene_item(self, scene: str, source: str) -> int:
        """Remove a source from a scene and add it back, as a user might: it gets a new id."""
        items = self.scene_items[scene]
        items[:] = [item for item in items if item.source != source]
        items.append(SceneItem(next(self._item_ids), source))
        return items[-1].item_id


REQUEST_TYPES = [
    "GetVersion", "GetCurrentProgramScene", "SetCurrentProgramScene", "GetSceneList",
    "GetInputList", "SetInputSettings", "GetInputSettings", "SetInputMute", "GetInputMute",
    "SetSourceFilterEnabled", "GetSceneItemId", "SetSceneItemEnabled", "GetSceneItemEnabled",
]  # fmt: skip
