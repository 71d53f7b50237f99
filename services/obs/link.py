"""A connection to OBS Studio's obs-websocket v5 server, over simpleobsws.

simpleobsws speaks the protocol (Hello, Identify with the salted challenge, msgpack
frames); this wraps it for the obs stage:

- `connect()` fails fast with a clear error. simpleobsws only notices that OBS closed the
  socket (close code 4009 for a refused password) by its receive task ending, and its
  `wait_until_identified` would sleep the whole timeout; here the wait races that task.
- a request in flight when the connection drops fails at once with `ObsUnavailable`
  instead of waiting out the request timeout (simpleobsws never wakes its waiters).
- events are queued and handed to `on_event` one at a time, in arrival order, from one
  task that holds its own reference (simpleobsws starts a bare task per event).
- scene item ids are cached per (scene, source), as OBS wants ids, not names.

The password is sent only as the Identify hash and never logged.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import simpleobsws  # type: ignore[import-untyped, unused-ignore]  # no py.typed
import websockets

log = logging.getLogger(__name__)

EventHandler = Callable[[str, dict[str, Any]], Awaitable[None]]

# obs-websocket's EventSubscription bits (protocol.md, "EventSubscription").
SUBSCRIBE_GENERAL = 1 << 0
SUBSCRIBE_CONFIG = 1 << 1
SUBSCRIBE_SCENES = 1 << 2
SUBSCRIBE_INPUTS = 1 << 3
SUBSCRIBE_OUTPUTS = 1 << 6
EVENT_SUBSCRIPTIONS = (
    SUBSCRIBE_GENERAL | SUBSCRIBE_CONFIG | SUBSCRIBE_SCENES | SUBSCRIBE_INPUTS | SUBSCRIBE_OUTPUTS
)

CLOSE_AUTHENTICATION_FAILED = 4009
CLOSE_UNSUPPORTED_RPC_VERSION = 4010
RESOURCE_NOT_FOUND = 600

PASSWORD_HELP = (
    "set MARIONETTE_OBS_PASSWORD to the obs-websocket server password "
    "(in OBS: Tools > WebSocket Server Settings > Show Connect Info)"
)


class ObsError(Exception):
    """Something went wrong talking to OBS."""


class ObsUnavailable(ObsError):
    """Cannot reach OBS or the connection dropped."""


class ObsPasswordError(ObsError):
    """OBS asks for a password and none is set, or OBS refused it (close code 4009)."""


class ObsRequestFailed(ObsError):
    """OBS answered a request with requestStatus.result false."""

    def __init__(self, request_type: str, code: int, comment: str | None) -> None:
        self.request_type = request_type
        self.code = code
        self.comment = comment
        detail = f": {comment}" if comment else ""
        super().__init__(f"OBS refused {request_type} (code {code}){detail}")


@dataclass(frozen=True)
class ObsHello:
    obs_version: str
    websocket_version: str
    rpc_version: int


class ObsLink:
    """One obs-websocket connection at a time; `connect()` again after it drops."""

    def __init__(
        self,
        url: str,
        password: str,
        *,
        request_timeout_s: float = 5.0,
        on_event: EventHandler | None = None,
    ) -> None:
        self.url = url
        self._password = password
        self._request_timeout_s = request_timeout_s
        self._on_event = on_event
        self._client: simpleobsws.WebSocketClient | None = None
        self._closed = asyncio.Event()
        self._closed.set()  # nothing to wait for until connected
        self._dispatcher: asyncio.Task[None] | None = None
        self._scene_item_ids: dict[tuple[str, str], int] = {}

    @property
    def connected(self) -> bool:
        client = self._client
        return (
            client is not None
            and client.ws_open
            and client.identified
            and not self._closed.is_set()
        )

    async def connect(self, timeout_s: float = 10.0) -> ObsHello:
        """Open, identify and read OBS's version; raise ObsPasswordError or ObsUnavailable."""
        await self.close()
        params = simpleobsws.IdentificationParameters(eventSubscriptions=EVENT_SUBSCRIPTIONS)
        client = simpleobsws.WebSocketClient(
            url=self.url, password=self._password, identification_parameters=params
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(client.connect(), timeout_s)
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise ObsUnavailable(f"cannot reach OBS at {self.url}: {exc or 'timed out'}") from exc
        try:
            await self._wait_identified(client, max(0.0, deadline - loop.time()))
        except BaseException:
            await client.disconnect()
            raise
        self._client = client
        self._scene_item_ids.clear()  # ids may differ if OBS restarted
        self._closed = closed = asyncio.Event()
        events: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

        # simpleobsws starts a fresh task per event; queueing keeps them in order, one
        # at a time. Both callbacks are bound to this connection, not to `self`, so a
        # late one from a connection already replaced cannot touch the new one.
        async def queue_event(event_type: str, event_data: dict[str, Any] | None) -> None:
            events.put_nowait((event_type, dict(event_data or {})))

        def receiver_done(task: "asyncio.Task[None]") -> None:
            closed.set()
            events.put_nowait(None)  # after any events already queued
            # simpleobsws's receive loop ends on a closed socket, or on a message it
            # cannot parse (then the exception is here, and the link is down as well).
            failure = None if task.cancelled() else task.exception()
            if self._client is client:
                why = f": {failure!r}" if failure else ""
                log.warning("the connection to OBS at %s dropped%s", self.url, why)

        client.register_event_callback(queue_event)
        client.recv_task.add_done_callback(receiver_done)
        self._dispatcher = asyncio.create_task(self._dispatch_events(events))
        try:
            version = await self.call("GetVersion")
        except BaseException:
            await self.close()
            raise
        hello = ObsHello(
            obs_version=str(version.get("obsVersion", "")),
            websocket_version=str(version.get("obsWebSocketVersion", "")),
            rpc_version=int(version.get("rpcVersion", simpleobsws.RPC_VERSION)),
        )
        log.info(
            "connected to OBS %s (obs-websocket %s) at %s",
            hello.obs_version,
            hello.websocket_version,
            self.url,
        )
        return hello

    async def _wait_identified(self, client: simpleobsws.WebSocketClient, timeout_s: float) -> None:
        """Wait for Identified, or for OBS to close the socket, whichever comes first."""
        identified = asyncio.create_task(client.wait_until_identified(timeout_s))
        receiver = client.recv_task
        try:
            await asyncio.wait({identified, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            identified.cancel()
        if client.identified and client.ws_open:
            return
        if not receiver.done():
            raise ObsUnavailable(f"OBS at {self.url} did not identify us within {timeout_s:.0f} s")
        code = client.ws.close_code if client.ws is not None else None
        reason = client.ws.close_reason if client.ws is not None else ""
        if code == CLOSE_AUTHENTICATION_FAILED:
            asked = (client.hello_message or {}).get("authentication") is not None
            if not self._password and asked:
                raise ObsPasswordError(f"OBS at {self.url} asks for a password: {PASSWORD_HELP}")
            raise ObsPasswordError(f"OBS at {self.url} refused the password: {PASSWORD_HELP}")
        if code == CLOSE_UNSUPPORTED_RPC_VERSION:
            raise ObsUnavailable(f"OBS at {self.url} does not speak obs-websocket v5 (rpc 1)")
        raise ObsUnavailable(
            f"OBS at {self.url} closed the connection before identifying us "
            f"(code {code}{', ' + reason if reason else ''})"
        )

    async def wait_closed(self) -> None:
        """Return when the connection drops or `close()` is called."""
        await self._closed.wait()

    async def close(self) -> None:
        client, self._client = self._client, None
        self._closed.set()
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None and dispatcher is not asyncio.current_task():
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def call(self, request_type: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; return its responseData ({} when it has none)."""
        client = self._client
        if client is None or not self.connected:
            raise ObsUnavailable(f"not connected to OBS at {self.url}")
        request = simpleobsws.Request(request_type, data)
        answer = asyncio.ensure_future(client.call(request, timeout=self._request_timeout_s))
        dropped = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({answer, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
            unanswered = not answer.done()
            if unanswered:
                answer.cancel()
        if unanswered:
            raise ObsUnavailable(f"the connection to OBS dropped during {request_type}")
        try:
            response = answer.result()
        except simpleobsws.MessageTimeout as exc:
            raise ObsUnavailable(
                f"OBS did not answer {request_type} within {self._request_timeout_s} s"
            ) from exc
        except (simpleobsws.NotIdentifiedError, websockets.exceptions.ConnectionClosed) as exc:
            raise ObsUnavailable(f"the connection to OBS dropped during {request_type}") from exc
        if not response.ok():
            status = response.requestStatus
            raise ObsRequestFailed(request_type, int(status.code), status.comment)
        return dict(response.responseData or {})

    async def current_scene(self) -> str:
        data = await self.call("GetCurrentProgramScene")
        # sceneName since 5.3; currentProgramSceneName before (kept, deprecated, after).
        return str(data.get("sceneName") or data["currentProgramSceneName"])

    async def switch_scene(self, scene: str) -> None:
        await self.call("SetCurrentProgramScene", {"sceneName": scene})

    async def set_text(self, source: str, text: str) -> None:
        settings = {"inputName": source, "inputSettings": {"text": text}, "overlay": True}
        await self.call("SetInputSettings", settings)

    async def set_mute(self, input_name: str, muted: bool) -> None:
        await self.call("SetInputMute", {"inputName": input_name, "inputMuted": muted})

    async def set_filter(self, source: str, filter_name: str, enabled: bool) -> None:
        data = {"sourceName": source, "filterName": filter_name, "filterEnabled": enabled}
        await self.call("SetSourceFilterEnabled", data)

    async def set_source_visible(self, scene: str, source: str, visible: bool) -> None:
        key = (scene, source)
        cached = key in self._scene_item_ids
        item_id = self._scene_item_ids[key] if cached else await self._scene_item_id(scene, source)
        try:
            await self._set_item_enabled(scene, item_id, visible)
        except ObsRequestFailed as exc:
            self._scene_item_ids.pop(key, None)
            if exc.code != RESOURCE_NOT_FOUND or not cached:
                raise
            # The item was removed and added again in OBS since we looked: new id.
            item_id = await self._scene_item_id(scene, source)
            await self._set_item_enabled(scene, item_id, visible)

    async def _scene_item_id(self, scene: str, source: str) -> int:
        data = await self.call("GetSceneItemId", {"sceneName": scene, "sourceName": source})
        item_id = int(data["sceneItemId"])
        self._scene_item_ids[(scene, source)] = item_id
        return item_id

    async def _set_item_enabled(self, scene: str, item_id: int, enabled: bool) -> None:
        data = {"sceneName": scene, "sceneItemId": item_id, "sceneItemEnabled": enabled}
        await self.call("SetSceneItemEnabled", data)

    async def scenes(self) -> list[str]:
        """Scene names top to bottom, as OBS's Scenes dock lists them. obs-websocket sends
        them reversed (sceneIndex 0 is the bottom one), so order by sceneIndex, highest
        first."""
        data = await self.call("GetSceneList")
        listed = sorted(data.get("scenes", []), key=lambda s: -int(s.get("sceneIndex", 0)))
        return [str(scene["sceneName"]) for scene in listed]

    async def inputs(self) -> list[str]:
        data = await self.call("GetInputList")
        return [str(item["inputName"]) for item in data.get("inputs", [])]

    async def _dispatch_events(
        self, events: "asyncio.Queue[tuple[str, dict[str, Any]] | None]"
    ) -> None:
        while (item := await events.get()) is not None:
            if self._on_event is None:
                continue
            event_type, event_data = item
            try:
                await self._on_event(event_type, event_data)
            except Exception:
                log.exception("handling the OBS event %s failed", event_type)
