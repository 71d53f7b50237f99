"""vts: a VTube Studio model speaks with the character's mouth and shows its expressions.

In: the session's avatar.expr (mouth tracks, expressions), playback.progress (where the
reply's audio is) and control. Out, to VTube Studio's API: the mouth track injected into
MouthOpen (and the expression's mouth form into MouthSmile) at the track's frame rate, in
step with the audio as playback reports it (services.avatar.timeline: the overlay's
clock); expressions as the mapping file says (a hotkey or an expression file). A pause or
an interrupt on control shuts the mouth at once, before playback's own report comes.

VTube Studio asks the user once to allow the plugin; the token is kept on disk and asked
for again when the user revokes it. The connection comes back with backoff.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

from contracts import AvatarExpr, Control, Interrupt, Panic, Pause, PlaybackProgress
from contracts.limits import AVATAR_FPS
from contracts.topics import AVATAR_EXPR, CONTROL, PLAYBACK_PROGRESS
from services.avatar.timeline import Timeline
from services.bus import Bus, Stage, consumes
from services.kept_link import KeptLink, check_websocket_url
from services.settings import load_settings
from services.vts.api import Hotkey, VtsAccessDenied, VtsError, VtsLink, VtsUnavailable
from services.vts.mapping import VtsMapping, find_hotkey, load_mapping
from services.vts.settings import URL_VARIABLE, VtsSettings

log = logging.getLogger("marionette.vts")

TICK_S = 1 / max(AVATAR_FPS)
"""While the mouth moves, the stage wakes when the track's next frame is due, at least at
this rate. Otherwise it sleeps until a report or a control message changes the timeline
(nothing is due in between), and while VTube Studio is away it looks every AWAY_TICK_S. A
value goes out when the frame changes, and at least every KEEPALIVE_S, since VTube Studio
takes a parameter back one second after its last value."""
AWAY_TICK_S = 0.25
KEEPALIVE_S = 0.5


class VtsStage(Stage):
    name = "vts"

    def __init__(
        self, settings: VtsSettings, bus: Bus, mapping: VtsMapping, link: VtsLink | None = None
    ) -> None:
        super().__init__(bus)
        self.settings = settings
        self.mapping = mapping
        self.link = link or VtsLink(settings.url, settings.token_file,
                                    request_timeout_s=settings.request_timeout_s,
                                    token_wait_s=settings.token_wait_s)  # fmt: skip
        self.timeline = Timeline()
        self.kept = KeptLink("VTube Studio", open_link=self._open,
                             is_open=lambda: self.link.connected,
                             wait_closed=self.link.wait_closed, failed=VtsError,
                             refused=VtsAccessDenied, refused_state="denied",
                             max_wait_s=settings.reconnect_max_s,
                             on_change=bus.status_changed)  # fmt: skip
        self.model = ""
        self.hotkeys: list[Hotkey] = []
        self.expression = "neutral"
        self.toggled: set[str] = set()  # ToggleExpression hotkeys we switched on
        self.open_until = 0.0  # keep sending until then (the mouth shut: zeros, then rest)
        self.sent: tuple[float | None, float, float] = (None, 0.0, 0.0)  # due, value, when
        # One frame at a time: a pause's zero is never overtaken by a frame worked out
        # before the pause came.
        self.moving = asyncio.Lock()
        self.changed = asyncio.Event()  # a report came: the next frame may be due now

    @classmethod
    async def build(cls, bus: Bus) -> "VtsStage":
        settings = load_settings(VtsSettings)
        check_websocket_url(settings.url, URL_VARIABLE, "VTube Studio's API as ws://HOST:PORT "
                            "(VTube Studio: Settings > Start API; 8001 by default)")  # fmt: skip
        stage = cls(settings, bus, load_mapping(settings.mapping_file))
        await stage.kept.start()
        return stage

    # --- the bus ------------------------------------------------------------------------------

    @consumes(AVATAR_EXPR)
    async def on_expression(self, expr: AvatarExpr) -> None:
        if expr.session_id == self.settings.session_id:
            self.timeline.on_expression(expr, time.monotonic())
            self.changed.set()

    @consumes(PLAYBACK_PROGRESS)
    async def on_progress(self, report: PlaybackProgress) -> None:
        if report.session_id == self.settings.session_id:
            self.timeline.on_progress(report, time.monotonic())
            self.changed.set()

    @consumes(CONTROL)
    async def on_control(self, message: Control) -> None:
        command = message.command
        async with self.moving:
            now = time.monotonic()
            if isinstance(command, Pause) and command.paused:
                self.timeline.hold(command.target_turn_id, now)
            elif isinstance(command, Interrupt):
                self.timeline.stop(command.target_turn_id, now)
            elif isinstance(command, Panic) and command.engaged and self.timeline.active:
                self.timeline.stop(self.timeline.active.id, now)
            else:
                return
            if self.link.connected:
                await self._inject(0.0)  # shut now, not at the next frame

    # --- VTube Studio -------------------------------------------------------------------------

    async def connect(self) -> None:
        """One attempt; VtsAccessDenied or another VtsError says why it failed."""
        await self.kept.attempt()

    async def _open(self) -> None:
        """Connect (authenticated), and read the model's hotkeys."""
        self.model = await self.link.connect()
        self.hotkeys = await self.link.hotkeys()
        self.toggled.clear()
        for tag, action in self.mapping.expressions.items():
            if action.hotkey is not None and find_hotkey(self.hotkeys, action.hotkey) is None:
                log.warning("mapping: %s's hotkey %r is not a hotkey of model %r", tag,
                            action.hotkey, self.model)  # fmt: skip

    async def background(self) -> None:
        try:
            await asyncio.gather(self.kept.keep(), self._move())
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.link.close(), 5)

    async def _move(self) -> None:
        """The mouth, frame by frame, woken when the next frame is due."""
        wait: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), wait)
            self.changed.clear()
            if not self.link.connected:
                wait = AWAY_TICK_S
                continue
            async with self.moving:
                wait = await self._frame(time.monotonic())

    async def _frame(self, now: float) -> float | None:
        """Show what the timeline says; returns how long until something is due (s), or
        None when nothing is until the timeline changes."""
        frame = self.timeline.frame(now)
        if frame.expression is not None:
            await self._show(frame.expression)
        due, value, at = self.sent
        if frame.speaking:
            self.open_until = now + self.settings.rest_s
            if (frame.due, frame.mouth) != (due, value) or now - at >= KEEPALIVE_S:
                await self._inject(frame.mouth, frame.due)
            if frame.next_in is None:
                return TICK_S
            return min(TICK_S, frame.next_in + 0.0005)  # just past the boundary, not before
        if now < self.open_until:  # resting: zeros, kept alive until VTube Studio takes over
            if value != 0.0 or now - at >= KEEPALIVE_S:
                await self._inject(0.0)
            return min(KEEPALIVE_S, self.open_until - now)
        return None

    async def _inject(self, mouth: float, due: float | None = None) -> None:
        self.sent = (due, mouth, time.monotonic())
        values = {self.settings.mouth_open_parameter: round(mouth, 3)}
        if self.settings.mouth_form_parameter:
            values[self.settings.mouth_form_parameter] = self.mapping.mouth_form(self.expression)
        try:
            await self.link.inject(values)
        except VtsUnavailable:
            pass  # kept.keep() reconnects
        except VtsError as exc:
            log.warning("VTube Studio refused the mouth: %s", exc)

    async def _show(self, tag: str) -> None:
        """Leave the old expression (an expression file off, a toggle toggled back), then
        show the new one, as the mapping says."""
        if tag == self.expression:
            return
        old = self.mapping.expressions.get(self.expression)
        new = self.mapping.expressions.get(tag)
        self.expression = tag
        try:
            if old is not None and old.expression is not None:
                await self.link.set_expression(old.expression, False)
            if old is not None and old.hotkey is not None and old.hotkey in self.toggled:
                self.toggled.discard(old.hotkey)
                await self._trigger(old.hotkey)
            if new is not None and new.expression is not None:
                await self.link.set_expression(new.expression, True)
            if new is not None and new.hotkey is not None:
                hotkey = await self._trigger(new.hotkey)
                if hotkey is not None and hotkey.type == "ToggleExpression":
                    self.toggled.add(new.hotkey)
        except VtsUnavailable:
            pass
        except VtsError as exc:
            log.warning("VTube Studio refused expression %r: %s", tag, exc)

    async def _trigger(self, wanted: str) -> Hotkey | None:
        hotkey = find_hotkey(self.hotkeys, wanted)
        if hotkey is not None:
            await self.link.trigger_hotkey(hotkey.hotkey_id)
        return hotkey

    def status(self) -> dict[str, Any]:
        said = self.kept.status() | {"url": self.settings.url}
        if self.kept.state == "connected":
            said |= {"model": self.model, "hotkeys": len(self.hotkeys),
                     "expression": self.expression}  # fmt: skip
        return said
