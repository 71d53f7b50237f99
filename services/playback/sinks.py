"""Where audio goes: the speakers (sounddevice) or a WAV file per turn."""

import asyncio
import time
import wave
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soxr


class AudioSink(Protocol):
    async def play(self, session: str, turn: str, pcm: bytes, sample_rate: int) -> None:
        """Returns once the audio has been played."""
        ...

    def end_turn(self, session: str, turn: str) -> Path | None: ...


class WavSink:
    """One WAV per turn, at the turn's first sample rate; paced in real time if asked."""

    def __init__(self, directory: Path, realtime: bool) -> None:
        self.directory = directory
        self.realtime = realtime
        self._open: dict[tuple[str, str], tuple[wave.Wave_write, int, Path]] = {}

    async def play(self, session: str, turn: str, pcm: bytes, sample_rate: int) -> None:
        key = (session, turn)
        if key not in self._open:
            path = self.directory / session / f"{turn}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = wave.open(str(path), "wb")  # noqa: SIM115
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(sample_rate)
            self._open[key] = (writer, sample_rate, path)
        writer, rate, _ = self._open[key]
        if sample_rate != rate and pcm:
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
            pcm = (soxr.resample(samples, sample_rate, rate) * 32767).astype("<i2").tobytes()
        started = time.monotonic()
        writer.writeframes(pcm)
        if self.realtime:
            duration = len(pcm) / 2 / rate
            await asyncio.sleep(max(0.0, duration - (time.monotonic() - started)))

    def end_turn(self, session: str, turn: str) -> Path | None:
        opened = self._open.pop((session, turn), None)
        if opened is None:
            return None
        writer, _, path = opened
        writer.close()
        return path


class SpeakerSink:
    def __init__(self, device: str | None) -> None:
        import sounddevice  # raises OSError without PortAudio

        self._sd: Any = sounddevice
        self._device = device

    async def play(self, session: str, turn: str, pcm: bytes, sample_rate: int) -> None:
        samples = np.frombuffer(pcm, dtype="<i2")
        await asyncio.to_thread(self._play_blocking, samples, sample_rate)

    def _play_blocking(self, samples: np.ndarray, sample_rate: int) -> None:
        self._sd.play(samples, sample_rate, device=self._device, blocking=True)

    def end_turn(self, session: str, turn: str) -> Path | None:
        return None


def open_sink(output: str, device: str | None, wav_dir: Path, realtime: bool) -> AudioSink:
    if output in ("auto", "speaker"):
        try:
            sink = SpeakerSink(device)
            if sink._sd.query_devices(kind="output"):
                return sink
        except Exception:
            if output == "speaker":
                raise
    return WavSink(wav_dir, realtime)
