"""Plain facts about a whole picture: how bright it is and which colours fill it.

Both are read from a small thumbnail: they are about the picture as a whole, and 64 pixels
across say it as well as 640 for a fraction of the work.
"""

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Brightness = Literal["dark", "dim", "bright"]

THUMBNAIL_SIDE = 64
DARK_BELOW = 60
"""Mean luma (0-255) under which a picture is dark: a room with the lights off, a covered
lens. Under DIM_BELOW it is dim (an evening room); above, bright."""
DIM_BELOW = 110
MAIN_COLOUR_SHARE = 0.2
"""A colour is named when it covers at least this share of the picture (the largest one is
always named)."""
MAX_COLOURS = 2

# Hue bands in OpenCV's 0-179 hue scale, with the word a person would use.
_HUES = (
    (8, "red"), (20, "orange"), (33, "yellow"), (85, "green"), (130, "blue"), (150, "purple"),
    (170, "pink"), (180, "red"),
)  # fmt: skip


@dataclass(frozen=True)
class SceneFacts:
    brightness: Brightness
    luma: float
    colours: tuple[str, ...]
    """The main colours, most first."""

    def phrase(self) -> str:
        """'bright, mostly blue and white'."""
        return f"{self.brightness}, mostly {' and '.join(self.colours)}"


def colour_names(hsv: np.ndarray) -> np.ndarray:
    """A colour word for each pixel of an HSV (OpenCV scale) image, as an array of str."""
    hue, saturation, value = (hsv[..., i].astype(np.int16) for i in range(3))
    names = np.full(hue.shape, "red", dtype=object)
    for upper, name in reversed(_HUES):
        names[hue < upper] = name
    # Dark oranges and reds are what people call brown (wood, hair, skin in shadow).
    names[(hue < 20) & (value < 150) & (saturation >= 60)] = "brown"
    grey = saturation < 45
    names[grey] = "grey"
    names[grey & (value >= 190)] = "white"
    names[value < 50] = "black"
    return names


def scene_facts(image: np.ndarray) -> SceneFacts:
    """Brightness and main colours of a BGR picture."""
    height, width = image.shape[:2]
    scale = min(1.0, THUMBNAIL_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    luma = float(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).mean())
    brightness: Brightness = "dark" if luma < DARK_BELOW else "dim" if luma < DIM_BELOW \
        else "bright"  # fmt: skip
    names, counts = np.unique(colour_names(cv2.cvtColor(small, cv2.COLOR_BGR2HSV)),
                              return_counts=True)  # fmt: skip
    ranked = sorted(zip(counts.tolist(), names.tolist(), strict=True), reverse=True)
    total = sum(counts.tolist())
    colours = [str(name) for count, name in ranked if count / total >= MAIN_COLOUR_SHARE]
    return SceneFacts(brightness, round(luma, 1), tuple(colours[:MAX_COLOURS] or [ranked[0][1]]))
