"""obs: OBS follows the character, over obs-websocket v5.

In: the session's playback.progress and tts.chunk (where the reply is, what it says) and
control. Out, to OBS: the talking scene while a reply plays (and the scene before it, or
the idle scene, after it), captions in a text source word by word as they are heard, a
source shown and a filter switched on while speaking, and control's scene, source, filter
and mute commands. Panic is one control message: every stage stops the reply, and here
the character's audio is muted and the BRB scene shown; lifting it unmutes and goes back.

OBS may be closed and opened again at any time: the connection comes back with backoff,
and what OBS should show (panic, captions, talking) is set again when it does. A password
OBS refuses stops the stage at start, naming MARIONETTE_OBS_PASSWORD.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

from contracts import Control, Interrupt, Panic, Pause, PlaybackProgress, TtsChunk
from contracts.control import InputMute, SceneSwitch, SourceToggle
from contracts.topics import CONTROL, PLAYBACK_PROGRESS, TTS_CHUNK
from services.avatar.timeline import Timeline
from services.bus import Bus, Stage, consumes
from services.kept_link import KeptLink, check_websocket_url
from services.obs.link import (
    ObsError,
    ObsHello,
    ObsLink,
    ObsPasswordError,
    ObsRequestFailed,
    ObsUnavailable,
)
from services.obs.settings import URL_VARIABLE, ObsSettings
from services.settings import load_settings

log = logging.getLogger("marionette.obs")


class ObsStage(Stage):
    name = "obs"

    def __init__(self, settings: ObsSettings, bus: Bus, link: ObsLink | None = None) -> None:
        super().__init__(bus)
        self.settings = settings
        self.link = link or ObsLink(settings.url, settings.password, on_event=self._on_obs_event,
                                    request_timeout_s=settings.request_timeout_s)  # fmt: skip
        self.timeline = Timeline()
        self.hello: ObsHello | None = None
        self.kept = KeptLink("OBS", open_link=self._open, is_open=lambda: self.link.connected,
                             wait_closed=self.link.wait_closed, failed=ObsError,
                             refused=ObsPasswordError, refused_state="password refused",
                             max_wait_s=settings.reconnect_max_s,
                             on_change=bus.status_changed)  # fmt: skip
        self.panicked = False
        self.scene_before: str | None = None  # before talking or panic, to go back to
        self.shown_talking = False
        self.shown_caption: str | None = None
        self.scene = ""  # the program scene, as OBS last said
        self.scene_names: list[str] = []
        self.muted: bool | None = None  # the character's audio source, as OBS last said

    @classmethod
    async def build(cls, bus: Bus) -> "ObsStage":
        settings = load_settings(ObsSettings)
        where = "OBS's WebSocket server as ws://HOST:PORT (OBS: Tools > WebSocket Server "
        check_websocket_url(settings.url, URL_VARIABLE, where + "Settings; 4455 by default)")
        stage = cls(settings, bus)
        await stage.kept.start()
        return stage

    # --- the bus ------------------------------------------------------------------------------

    @consumes(PLAYBACK_PROGRESS)
    async def on_progress(self, report: PlaybackProgress) -> None:
        if report.session_id == self.settings.session_id:
            self.timeline.on_progress(report, time.monotonic())

    @consumes(TTS_CHUNK)
    async def on_chunk(self, chunk: TtsChunk) -> None:
        if chunk.session_id == self.settings.session_id:
            self.timeline.on_chunk(chunk)

    @consumes(CONTROL)
    async def on_control(self, message: Control) -> None:
        command = message.command
        if isinstance(command, Panic):
            self.panicked = command.engaged
            if command.engaged and self.timeline.active is not None:
                # Switched off by the panic, this stage never sees playback's "flushed":
                # the reply is over here and now, or it would look still playing after.
                self.timeline.stop(self.timeline.active.id, time.monotonic())
            await self._quietly(self._panic() if command.engaged else self._lift_panic())
        elif isinstance(command, Interrupt):
            self.timeline.stop(command.target_turn_id, time.monotonic())
        elif isinstance(command, Pause) and command.paused:
            self.timeline.hold(command.target_turn_id, time.monotonic())
        elif isinstance(command, SceneSwitch):
            self.scene_before = None  # the operator chose: talking goes back to this one
            await self._quietly(self.link.switch_scene(command.scene))
        elif isinstance(command, SourceToggle):
            await self._quietly(self._toggle(command))
        elif isinstance(command, InputMute):
            muted_input = command.input or self.settings.audio_source
            if muted_input:
                await self._quietly(self.link.set_mute(muted_input, command.muted))
            else:
                log.warning("input_mute without an input, and MARIONETTE_OBS_AUDIO_SOURCE unset")

    # --- OBS ------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """One attempt; ObsPasswordError or another ObsError says why it failed."""
        await self.kept.attempt()

    async def _open(self) -> None:
        """Connect, and read what OBS shows now."""
        self.hello = await self.link.connect(self.settings.connect_timeout_s)
        self.scene_names = await self.link.scenes()
        self.scene = await self.link.current_scene()
        if self.settings.audio_source:
            with contextlib.suppress(ObsRequestFailed):  # no such input: said when muting
                asked = {"inputName": self.settings.audio_source}
                answer = await self.link.call("GetInputMute", asked)
                self.muted = bool(answer.get("inputMuted"))
        log.info("OBS %s (obs-websocket %s) at %s; on air: %r", self.hello.obs_version,
                 self.hello.websocket_version, self.settings.url, self.scene)  # fmt: skip

    async def background(self) -> None:
        try:
            shown_again = lambda: self._quietly(self._show_again())  # noqa: E731
            await asyncio.gather(self.kept.keep(shown_again), self._follow_the_reply())
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.link.close(), 5)

    async def _on_obs_event(self, kind: str, data: dict[str, Any]) -> None:
        """OBS says something changed (the streamer switched scenes by hand, say)."""
        if kind == "CurrentProgramSceneChanged":
            self.scene = str(data.get("sceneName", self.scene))
            self.bus.status_changed()
        elif (
            kind == "InputMuteStateChanged" and data.get("inputName") == self.settings.audio_source
        ):
            self.muted = bool(data.get("inputMuted"))
            self.bus.status_changed()
        elif kind in ("SceneCreated", "SceneRemoved", "SceneNameChanged"):
            with contextlib.suppress(ObsError):
                self.scene_names = await self.link.scenes()
                self.bus.status_changed()

    async def _show_again(self) -> None:
        """After a (re)connection: what OBS should show now, whatever it showed before."""
        self.shown_caption = None
        if self.panicked:
            await self._panic()
        elif self.shown_talking:
            self.shown_talking = False  # set again by the next frame

    async def _follow_the_reply(self) -> None:
        """Scenes, sources and captions from the timeline, a few times a second."""
        period = 1.0 / self.settings.caption_updates_per_s
        while True:
            await asyncio.sleep(period)
            if not self.link.connected or self.panicked or self.bus.switched_off():
                continue
            now = time.monotonic()
            frame = self.timeline.frame(now)
            await self._quietly(self._show_talking(self._talking(now)))
            if self.settings.caption_source and frame.caption != self.shown_caption:
                await self._quietly(self._caption(frame.caption))

    def _talking(self, now: float) -> bool:
        """A reply is playing or held, or ended less than idle_after_s ago."""
        turn = self.timeline.active
        if turn is None or turn.state == "waiting":
            return False
        if turn.state in ("playing", "paused") and turn.stopped_at is None:
            return True
        ended = turn.ended_at if turn.ended_at is not None else now
        return now - ended < self.settings.idle_after_s

    async def _show_talking(self, talking: bool) -> None:
        if talking == self.shown_talking:
            return
        self.shown_talking = talking
        settings = self.settings
        if settings.talking_scene:
            if talking and self.scene != settings.talking_scene:
                self.scene_before = self.scene
                await self._switch(settings.talking_scene)
            elif not talking and self.scene == settings.talking_scene:
                back = settings.idle_scene or self.scene_before
                if back:
                    await self._switch(back)
        if settings.speaking_source:
            await self.link.set_source_visible(self.scene, settings.speaking_source, talking)
        if settings.speaking_filter and settings.speaking_filter_source:
            await self.link.set_filter(settings.speaking_filter_source,
                                       settings.speaking_filter, talking)  # fmt: skip

    async def _caption(self, text: str) -> None:
        self.shown_caption = text
        await self.link.set_text(self.settings.caption_source, text)

    async def _panic(self) -> None:
        """Mute the character, show BRB, clear the caption (the reply itself is stopped by
        every other stage, from the same control message)."""
        settings = self.settings
        if settings.audio_source:
            await self.link.set_mute(settings.audio_source, True)
        if settings.brb_scene and self.scene != settings.brb_scene:
            if self.scene != settings.talking_scene:
                self.scene_before = self.scene
            await self._switch(settings.brb_scene)
        if settings.caption_source:
            await self._caption("")
        log.warning("panic: OBS muted %r and shows %r", settings.audio_source, settings.brb_scene)

    async def _lift_panic(self) -> None:
        settings = self.settings
        if settings.audio_source:
            await self.link.set_mute(settings.audio_source, False)
        back = settings.idle_scene or self.scene_before
        if settings.brb_scene and self.scene == settings.brb_scene and back:
            await self._switch(back)
        self.shown_talking = False

    async def _toggle(self, command: SourceToggle) -> None:
        if command.filter is not None:
            await self.link.set_filter(command.source, command.filter, command.enabled)
        else:
            scene = command.scene or self.scene
            await self.link.set_source_visible(scene, command.source, command.enabled)

    async def _switch(self, scene: str) -> None:
        await self.link.switch_scene(scene)
        self.scene = scene

    async def _quietly(self, action: Any) -> None:
        """Do it if OBS is there; a failed request is logged, never fatal (OBS is the
        streamer's, and a missing scene must not stop the character)."""
        if not self.link.connected:
            action.close()  # not awaited: OBS is away, and _show_again catches up
            return
        try:
            await action
        except ObsUnavailable:
            pass  # the connection dropped: kept.keep() takes it from here
        except ObsError as exc:
            log.warning("OBS refused: %s", exc)

    def status(self) -> dict[str, Any]:
        said = self.kept.status() | {"url": self.settings.url, "panic": self.panicked}
        if self.hello is not None and self.kept.state == "connected":
            said |= {"obs_version": self.hello.obs_version, "scene": self.scene,
                     "scenes": self.scene_names[:50]}  # fmt: skip
            if self.muted is not None:
                said["muted"] = self.muted
        return said
