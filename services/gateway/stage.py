"""gateway: the HTTP and WebSocket server, run as a stage.

It consumes nothing through the runtime (it watches topics with plain reads, see
services.gateway.tail) and publishes what its clients send: control, chat, the remote
microphone's frames, the remote speaker's progress, text to say. Several gateways may run
at once: on several machines, on several ports, or sharing one port (share_port, which
`up --scale gateway=N` sets). It listens only once it serves, so a spare takes the port
over when the one it replaces has died.
"""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from contracts.topics import (
    AUDIO_FRAME,
    CHAT_MESSAGE,
    CONTROL,
    PLAYBACK_PROGRESS,
    POLICY_TOKEN,
    VISION_OBSERVATION,
)
from services.bus import Bus, Publishes, Stage
from services.bus.connect import bus_client
from services.bus.redis_bus import RedisBus
from services.errors import StageStartError
from services.gateway.app import create_app
from services.gateway.link import BusLink
from services.gateway.settings import GatewaySettings
from services.settings import load_settings

log = logging.getLogger("marionette.gateway")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the stage runtime owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listening_socket(host: str, port: int, share: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for sockets that say they are
    # TCP, and without it every response waited ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StageStartError(
            f"the gateway cannot listen on {host}:{port} ({exc.strerror}): set "
            "MARIONETTE_GATEWAY_PORT to a free port, or MARIONETTE_GATEWAY_HOST"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class GatewayStage(Stage):
    name = "gateway"
    control = Publishes(CONTROL)
    chat = Publishes(CHAT_MESSAGE)
    tokens = Publishes(POLICY_TOKEN)  # /api/say: words the character speaks as they are
    frames = Publishes(AUDIO_FRAME)  # /ws/audio: a remote microphone
    progress = Publishes(PLAYBACK_PROGRESS)  # /ws/audio: a remote speaker's progress
    observations = Publishes(VISION_OBSERVATION)  # /api/vision: what a picture shows

    def __init__(self, settings: GatewaySettings, link: BusLink, bus: Bus) -> None:
        super().__init__(bus)
        self.settings = settings
        self.link = link
        self.app = create_app(link)
        self.url = ""  # http://host:port once listening
        self.listening = asyncio.Event()

    @classmethod
    async def build(cls, bus: Bus) -> "GatewayStage":
        settings = load_settings(GatewaySettings)
        if not isinstance(bus, RedisBus):
            raise StageStartError("the gateway runs on Redis (marionette up / marionette run)")
        watcher = bus_client(bus.settings, socket_connect_timeout=5)
        return cls(settings, BusLink(settings, bus.settings, bus, watcher), bus)

    async def background(self) -> None:
        """Serve until the stage stops."""
        sock = listening_socket(self.settings.host, self.settings.port, self.settings.share_port)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, ws_max_size=1 << 20,
            lifespan="off", timeout_graceful_shutdown=2,
        )  # fmt: skip
        server = _Server(config)
        log.info("gateway at %s (API docs at %s/api/docs)", self.url, self.url)
        self.listening.set()
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
        watching = asyncio.create_task(self.link.turns.run(), name="turn book")
        try:
            await asyncio.shield(serving)
        finally:
            watching.cancel()
            # Stopping: let uvicorn close its connections (WebSockets get a close frame).
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(serving, 5)
            sock.close()
            long_term = getattr(self.app.state, "long_term", None)  # opened on first use
            if long_term is not None:
                await long_term.close()
            await self.link.client.aclose()
