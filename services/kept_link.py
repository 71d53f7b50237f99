"""A connection to an app on the streamer's machine (OBS, VTube Studio), kept up while a
stage runs: tried once when the stage is built, then opened again with doubling backoff
whenever it drops. Its state is what the stage's status() (so /api/status) shows.

The app may refuse us (a wrong password, a plugin the user denied): at start that stops
the stage, naming the fix; later (the user changed it meanwhile) it is retried slowly.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.bus.recovery import Backoff
from services.errors import ConfigError, StageStartError

log = logging.getLogger("marionette.kept_link")

FIRST_WAIT_S = 1.0


def check_websocket_url(url: str, variable: str, where: str) -> None:
    """A ConfigError naming the variable unless `url` is ws:// or wss://."""
    if not url.startswith(("ws://", "wss://")):
        raise ConfigError(f"{variable}={url!r}: give {where}")


class KeptLink:
    def __init__(
        self,
        app: str,
        *,
        open_link: Callable[[], Awaitable[None]],
        is_open: Callable[[], bool],
        wait_closed: Callable[[], Awaitable[None]],
        failed: type[Exception],
        refused: type[Exception],
        refused_state: str,
        max_wait_s: float,
        on_change: Callable[[], None],
    ) -> None:
        """open_link: one attempt (raises `failed`, or `refused` when the app says no);
        refused_state: the state shown then ("password refused"); on_change: the stage's
        status changed (Bus.status_changed)."""
        self.app = app
        self._open_link = open_link
        self._is_open = is_open
        self._wait_closed = wait_closed
        self.failed = failed
        self.refused = refused
        self.refused_state = refused_state
        self.max_wait_s = max_wait_s
        self._on_change = on_change
        self.state = "connecting"  # connected | connecting | unreachable | refused_state
        self.problem = ""

    async def start(self) -> None:
        """At build: a refusal stops the stage; an app not there yet is waited for in
        `keep()`, in the background."""
        try:
            await self.attempt()
        except self.refused as exc:
            raise StageStartError(str(exc)) from None
        except self.failed as exc:
            log.warning("%s is not there yet (%s); trying again in the background", self.app, exc)

    async def attempt(self) -> None:
        """One attempt; raises what open_link raised."""
        try:
            await self._open_link()
        except self.refused as exc:
            self._set(self.refused_state, str(exc))
            raise
        except self.failed as exc:
            self._set("unreachable", str(exc))
            raise
        self._set("connected", "")

    async def keep(self, on_back: Callable[[], Awaitable[None]] | None = None) -> None:
        """Until cancelled: wait for the link to drop, then open it again; `on_back` after
        each reconnection (set again what the app should show)."""
        backoff = Backoff(FIRST_WAIT_S, self.max_wait_s)
        while True:
            if self._is_open():
                await self._wait_closed()
                self._set("connecting", f"{self.app} closed the connection")
                log.warning("%s went away; reconnecting", self.app)
                backoff.reset()
            try:
                await self.attempt()
            except self.refused as exc:
                log.error("%s", exc)  # changed on the app's side meanwhile: retry slowly
                await asyncio.sleep(self.max_wait_s)
                continue
            except self.failed:
                await backoff.wait()
                continue
            if on_back is not None:
                await on_back()

    def status(self) -> dict[str, Any]:
        said: dict[str, Any] = {"connection": self.state}
        if self.problem:
            said["problem"] = self.problem
        return said

    def _set(self, state: str, problem: str) -> None:
        if (state, problem) != (self.state, self.problem):
            self.state, self.problem = state, problem
            self._on_change()
