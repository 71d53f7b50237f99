"""Where the camera stage's pictures come from: a camera (OpenCV VideoCapture) or files.

Both are blocking and run in a worker thread (the stage calls `grab` with asyncio.to_thread).
"""

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from services.errors import StageStartError
from services.vision.settings import VisionSettings

log = logging.getLogger("marionette.vision")

PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
STALE_FRAMES = 4
"""Frames a camera driver may hold in its queue (V4L2 keeps four): grabbed and dropped
before each look, or a look every few seconds would see a picture seconds old."""


class CameraError(StageStartError, RuntimeError):
    """No pictures to look at; the message names the setting to change."""


class PictureSource(Protocol):
    name: str

    def grab(self) -> bytes | np.ndarray:
        """The next picture: a file's bytes or a BGR frame. OSError when none came."""

    def close(self) -> None: ...


class CameraSource:
    """A camera by index (or, for tests, a video file: VideoCapture reads both)."""

    def __init__(self, device: int | str) -> None:
        self.name = f"camera {device}"
        self._capture = cv2.VideoCapture(device)
        if not self._capture.isOpened():
            self._capture.release()
            raise CameraError(
                f"no camera at MARIONETTE_VISION_DEVICE={device}: plug one in, choose another "
                "index with MARIONETTE_VISION_DEVICE, or look at pictures instead with "
                "MARIONETTE_VISION_SOURCE=file and MARIONETTE_VISION_PATH=<file or folder>"
            )

    def grab(self) -> np.ndarray:
        for _ in range(STALE_FRAMES):
            self._capture.grab()
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise OSError(f"{self.name} gave no picture (unplugged, or in use elsewhere?)")
        return frame

    def close(self) -> None:
        self._capture.release()


class FileSource:
    """A picture, or a folder of pictures looked at in turn by name (then from the start)."""

    def __init__(self, path: Path) -> None:
        self.name = f"file {path}"
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)
            if not self.files:
                raise CameraError(
                    f"MARIONETTE_VISION_PATH={path} holds no {'/'.join(PICTURE_SUFFIXES)} "
                    "pictures: put some there or point it at a picture"
                )
        elif path.is_file():
            self.files = [path]
        else:
            raise CameraError(
                f"MARIONETTE_VISION_PATH={path} is neither a picture nor a folder: point it "
                "at one, or look at a camera with MARIONETTE_VISION_SOURCE=camera"
            )
        self._next = 0

    def grab(self) -> bytes:
        path = self.files[self._next % len(self.files)]
        self._next += 1
        return path.read_bytes()

    def close(self) -> None:
        pass


def open_source(settings: VisionSettings) -> PictureSource:
    """The configured source; CameraError (naming the setting) when it is not there."""
    if settings.source == "file":
        assert settings.path is not None  # the settings refuse source=file without one
        return FileSource(Path(settings.path))
    return CameraSource(settings.device)
