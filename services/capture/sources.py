"""Where audio comes from: a microphone, a file, or stdin. Each yields float32 blocks.

Blocks are (frames, channels) arrays at the source's own rate; the Framer turns them into
16 kHz mono 20 ms frames.
"""

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from services.errors import StageStartError

BLOCK_S = 0.1
NO_BACKEND_HELP = (
    "no audio backend: PortAudio is not installed (apt-get install libportaudio2), "
    "or read audio from a file instead: --input FILE"
)


class CaptureError(StageStartError, RuntimeError):
    """Audio cannot be captured; the message says what to do instead."""


class AudioSource(Protocol):
    sample_rate: int
    channels: int
    realtime_source: bool
    """True when the source itself runs in real time (a microphone)."""

    def blocks(self) -> AsyncIterator[np.ndarray]: ...


class FileSource:
    realtime_source = False

    def __init__(self, path: Path) -> None:
        import soundfile

        if not path.is_file():
            raise CaptureError(f"no such audio file: {path}")
        try:
            self._file = soundfile.SoundFile(path)
        except RuntimeError as exc:
            raise CaptureError(f"cannot read {path} as audio (WAV, FLAC, OGG): {exc}") from None
        self.sample_rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        frames = int(self.sample_rate * BLOCK_S)
        with self._file:
            while True:
                block = self._file.read(frames, dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield block


class StdinSource:
    """Raw s16le PCM on standard input."""

    realtime_source = False

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        size = int(self.sample_rate * BLOCK_S) * 2 * self.channels
        stream = sys.stdin.buffer
        rest = b""
        while True:
            data = await asyncio.to_thread(stream.read, size)
            if not data:
                return
            data = rest + data
            whole = len(data) - len(data) % (2 * self.channels)
            data, rest = data[:whole], data[whole:]
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
            yield samples.reshape(-1, self.channels)


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError:
        raise CaptureError(NO_BACKEND_HELP) from None
    return sounddevice


def input_devices() -> list[dict[str, Any]]:
    """Input devices as sounddevice reports them: id, name, channels, default rate."""
    sd = _sounddevice()
    devices = []
    for index, info in enumerate(sd.query_devices()):
        if info["max_input_channels"] > 0:
            devices.append(
                {
                    "id": index,
                    "name": info["name"],
                    "channels": info["max_input_channels"],
                    "sample_rate": int(info["default_samplerate"]),
                }
            )
    return devices


def find_device(wanted: str | None) -> dict[str, Any]:
    devices = input_devices()
    if not devices:
        raise CaptureError("no microphone found; read audio from a file instead: --input FILE")
    if wanted is None:
        default = _sounddevice().default.device[0]
        return next((d for d in devices if d["id"] == default), devices[0])
    for device in devices:
        if str(device["id"]) == wanted or wanted.lower() in device["name"].lower():
            return device
    names = ", ".join(f"{d['id']}: {d['name']}" for d in devices)
    raise CaptureError(f"no input device matches {wanted!r}; devices: {names}")


class MicrophoneSource:
    realtime_source = True

    def __init__(self, device: str | None) -> None:
        self._device = find_device(device)
        self.sample_rate = self._device["sample_rate"]
        self.channels = min(self._device["channels"], 2)

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        sd = _sounddevice()
        loop = asyncio.get_running_loop()
        # Bounded: if the bus falls behind, the oldest audio goes first.
        queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=50)

        def put(block: np.ndarray) -> None:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(block)

        def callback(indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
            loop.call_soon_threadsafe(put, indata.copy())

        with sd.InputStream(
            device=self._device["id"],
            samplerate=self.sample_rate,
            channels=self.channels,
            dtype="float32",
            blocksize=int(self.sample_rate * 0.02),
            callback=callback,
        ):
            while True:
                yield await queue.get()
