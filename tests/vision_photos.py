"""Real photos for the vision tests: the ones scikit-image ships inside its wheel
(skimage/data; a test dependency, read as files without importing skimage).

astronaut.png: Eileen Collins, one face (at x 177, y 65, 97 px wide, in 512x512).
chelsea.png: a cat's face, close up, ears cut by the frame (451x300).
coffee.png: a cup of coffee on a table, nobody (600x400).
"""

import importlib.util
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def photo_path(name: str) -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the vision tests' photos come from scikit-image: install the test extra "
            "(pip install -e .[test])"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: scikit-image changed what its wheel ships")
    return path


def photo_bytes(name: str) -> bytes:
    return photo_path(name).read_bytes()


def photo(name: str) -> np.ndarray:
    """A photo as a BGR array."""
    image = cv2.imread(str(photo_path(name)), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def encoded(image: np.ndarray, suffix: str, *params: int) -> bytes:
    ok, data = cv2.imencode(suffix, image, list(params))
    assert ok
    return data.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR chunk declaring a size, and no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
