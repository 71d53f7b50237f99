"""Where audio goes: the speakers (sounddevice) or a WAV file per turn.

Playback hands a sink short blocks (block_ms), so it can stop between any two of them:
a pause or an interrupt silences the character within one block.
"""

import asyncio
import time
import wave
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import soxr


class AudioSink(Protocol):
    async def write(self, session: str, turn: str, pcm: bytes, sample_rate: int) -> None:
        """Play one short block; returns when the output is ready for the next one."""
        ...

    def end_turn(self, session: str, turn: str) -> Path | None: ...

    def resume_turn(self, session: str, turn: str, played_s: float) -> None:
        """A turn begun by a replica that died: go on after its first played_s seconds."""
        ...


class WavSink:
    """One WAV per turn, at the turn's first sample rate; paced in real time if asked.

    Each block is flushed to the file as it is written, so what the file holds is what
    has been played so far (a test can listen in, as a microphone near a speaker would).
    """

    def __init__(self, directory: Path, realtime: bool) -> None:
        self.directory = directory
        self.realtime = realtime
        self._open: dict[tuple[str, str], tuple[wave.Wave_write, IO[bytes], int, Path]] = {}
        self._due = 0.0  # monotonic time the last block written ends

    async def write(self, session: str, turn: str, pcm: bytes, sample_rate: int) -> None:
        writer, file, rate, _ = self._file(session, turn, sample_rate)
        if sample_rate != rate and pcm:
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
            pcm = (soxr.resample(samples, sample_rate, rate) * 32767).astype("<i2").tobytes()
        writer.writeframes(pcm)
        file.flush()
        if self.realtime:
            # Blocks follow each other without drift; after a pause the clock starts afresh.
            now = time.monotonic()
            self._due = max(self._due, now) + len(pcm) / 2 / rate
            await asyncio.sleep(self._due - now)

    def _file(
        self, session: str, turn: str, sample_rate: int
    ) -> tuple[wave.Wave_write, IO[bytes], int, Path]:
        key = (session, turn)
        if key not in self._open:
            path = self.directory / session / f"{turn}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            file = path.open("wb")
            writer = wave.open(file, "wb")  # noqa: SIM115
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(sample_rate)
            self._open[key] = (writer, file, sample_rate, path)
        return self._open[key]

    def end_turn(self, session: str, turn: str) -> Path | None:
        opened = self._open.pop((session, turn), None)
        if opened is None:
            return None
        writer, file, _, path = opened
        writer.close()
        file.close()
        return path

    def resume_turn(self, session: str, turn: str, played_s: float) -> None:
        """Keep what the file holds of the first played_s seconds; write on from there (the
        dead replica may have written a little past its last checkpoint)."""
        path = self.directory / session / f"{turn}.wav"
        if (session, turn) in self._open or not path.is_file():
            return
        try:
            with wave.open(str(path), "rb") as old:
                rate = old.getframerate()
                kept = old.readframes(min(old.getnframes(), round(played_s * rate)))
        except (wave.Error, EOFError):
            return  # cut off mid-header: start the file afresh
        writer, file, _, _ = self._file(session, turn, rate)
        writer.writeframes(kept)
        file.flush()


class SpeakerSink:
    """An output stream per sample rate, kept open; writes return once buffered."""

    def __init__(self, device: str | None) -> None:
        import sounddevice  # raises OSError without PortAudio

        self._sd: Any = sounddevice
        self._device = device
        self._streams: dict[int, Any] = {}

    async def write(self, session: str, turn: str, pcm: bytes, sample_rate: int) -> None:
        stream = self._streams.get(sample_rate)
        if stream is None:
            stream = self._sd.RawOutputStream(
                samplerate=sample_rate, channels=1, dtype="int16",
                device=self._device, latency="low",
            )  # fmt: skip
            stream.start()
            self._streams[sample_rate] = stream
        await asyncio.to_thread(stream.write, pcm)

    def end_turn(self, session: str, turn: str) -> Path | None:
        return None

    def resume_turn(self, session: str, turn: str, played_s: float) -> None:
        return None  # what was played was heard; the rest follows


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
