"""Pictures in: JPEG, PNG or WebP bytes (or an array a camera gave), checked and decoded.

The size is read from the file's header before anything is decoded, so a small file that
would decode to gigabytes (a "decompression bomb") is refused without allocating it.
"""

import struct
from dataclasses import dataclass

import cv2
import numpy as np

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 16_000_000
MAX_SIDE = 16_384  # VisionObservation's width and height go no further
WORKING_SIDE = 640
"""Pictures are looked at no larger than this on their longer side: detection cost grows
with the pixels, and a face worth mentioning is far bigger than a few pixels at this size."""

FORMATS = ("jpeg", "png", "webp")


class ImageError(ValueError):
    """Not a picture the detector will look at; the message says why."""


class ImageTooLarge(ImageError):
    """A picture over MAX_IMAGE_BYTES or MAX_IMAGE_PIXELS; the message names the limit."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


def read_header(data: bytes) -> ImageHeader:
    """The format and size a JPEG, PNG or WebP file declares; ImageError for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return ImageHeader("png", width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_header(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_header(data)
    raise ImageError("not a JPEG, PNG or WebP image")


def _webp_header(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:  # lossy: 14-bit sizes after the frame tag
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25:  # lossless: 14 bits each, minus one
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:  # extended: 24 bits each, minus one
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageHeader("webp", width, height)
    raise ImageError("a WebP file without a readable size")


# Start-of-frame markers carry the size; C4 (Huffman tables), C8 and CC are not frames.
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(data: bytes) -> ImageHeader:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # padding between markers
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _JPEG_FRAMES and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return ImageHeader("jpeg", width, height)
        at += 2 + length
    raise ImageError("a JPEG file without a readable size")


def check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"an empty picture ({width}x{height})")
    if max(width, height) > MAX_SIDE:
        raise ImageTooLarge(
            f"picture too large: {width}x{height} has a side over the limit of {MAX_SIDE} pixels"
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"picture too large: {width}x{height} is over the limit of "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels"
        )


def decode(data: bytes) -> tuple[np.ndarray, int, int]:
    """The picture as a BGR array of at most about WORKING_SIDE, with its original size.

    A large JPEG is decoded straight at a half, quarter or eighth of its size (libjpeg does
    that for a fraction of the work); other formats are decoded whole, then shrunk."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLarge(
            f"image file too large: {len(data)} bytes is over the limit of "
            f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB"
        )
    header = read_header(data)
    check_size(header.width, header.height)
    flags = cv2.IMREAD_COLOR
    if header.format == "jpeg":
        for reduced, factor in ((cv2.IMREAD_REDUCED_COLOR_8, 8), (cv2.IMREAD_REDUCED_COLOR_4, 4),
                                (cv2.IMREAD_REDUCED_COLOR_2, 2)):  # fmt: skip
            if max(header.width, header.height) // factor >= WORKING_SIDE:
                flags = reduced
                break
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise ImageError(f"this {header.format.upper()} file cannot be decoded (damaged?)")
    return shrink(image), header.width, header.height


def from_array(pixels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """A camera frame or a decoded picture (BGR, BGRA or grey, uint8) as decode() gives it."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ImageError(
            f"an image array is uint8 HxW or HxWx3/4; got {pixels.dtype} {pixels.shape}"
        )
    height, width = pixels.shape[:2]
    check_size(width, height)
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    elif pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    elif pixels.shape[2] != 3:
        raise ImageError(f"an image array has 1, 3 or 4 channels; got {pixels.shape[2]}")
    return shrink(pixels), width, height


def shrink(image: np.ndarray, side: int = WORKING_SIDE) -> np.ndarray:
    """At most `side` pixels on its longer side (area averaging: no aliasing)."""
    height, width = image.shape[:2]
    scale = side / max(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
