"""camera: looks at a camera (or picture files) every few seconds and publishes what it
sees as vision.observation, when that changes or has not been said for a while.

Only words and labels leave the stage: the picture is looked at here and dropped. While the
stage is switched off (module toggle, panic) it does not look at all.
"""

import asyncio
import logging
import time
from typing import Any

from contracts.topics import VISION_OBSERVATION
from services.bus import Bus, Publishes, Stage
from services.bus.stage import BACKGROUND_NICENESS
from services.settings import load_settings
from services.vision.detector import Detector, Sighting
from services.vision.images import ImageError
from services.vision.settings import VisionSettings
from services.vision.sources import PictureSource, open_source

log = logging.getLogger("marionette.vision")


class CameraStage(Stage):
    """Publishes what its source shows: one observation per change, and the same again
    every `republish_s` at most."""

    name = "camera"
    niceness = BACKGROUND_NICENESS  # not in a turn's path: see Stage.niceness
    observations = Publishes(VISION_OBSERVATION)

    def __init__(
        self, settings: VisionSettings, source: PictureSource, detector: Detector, bus: Bus
    ) -> None:
        super().__init__(bus)
        self.settings = settings
        self.source = source
        self.detector = detector
        # Observations are numbered from 0 in each run, and the run is their origin, so a
        # restarted stage is not taken for a redelivery of the previous run's observations.
        self.origin = f"v{round(time.time() * 1000)}"
        self.looks = 0
        self.published = 0
        self.last: Sighting | None = None
        self.last_published_at = 0.0
        self.problem: str | None = None

    @classmethod
    async def build(cls, bus: Bus) -> "CameraStage":
        settings = load_settings(VisionSettings)
        # Opening a camera can take a second or two; loading the cascades some milliseconds.
        source = await asyncio.to_thread(open_source, settings)
        return cls(settings, source, await asyncio.to_thread(Detector), bus)

    async def background(self) -> None:
        try:
            while True:
                if not self.bus.switched_off():
                    await self.look_once()
                await asyncio.sleep(self.settings.interval_s)
        finally:
            self.source.close()

    async def look_once(self) -> bool:
        """One look; whether it was published."""
        try:
            picture = await asyncio.to_thread(self.source.grab)
            sighting = await asyncio.to_thread(self.detector.look, picture)
        except (OSError, ImageError) as exc:
            # A camera unplugged for a moment, a file half written: the next look may do.
            if str(exc) != self.problem:
                log.warning("camera: %s", exc)
            self.problem = str(exc)
            self.bus.status_changed()
            return False
        self.problem = None
        self.looks += 1
        due = self.settings.republish_s > 0 and (
            time.monotonic() - self.last_published_at >= self.settings.republish_s
        )
        if sighting.same_as(self.last) and not due:
            return False
        await self.observations.publish(
            sighting.observation(session_id=self.settings.session_id, origin=self.origin,
                                 seq=self.published, source=self.settings.source)
        )  # fmt: skip
        self.published += 1
        self.last = sighting
        self.last_published_at = time.monotonic()
        self.bus.status_changed()
        log.info("camera: %s (%.0f ms)", sighting.description, sighting.elapsed_ms)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "source": self.source.name,
            "looks": self.looks,
            "published": self.published,
            "seen": self.last.description if self.last else None,
            "problem": self.problem,
        }
