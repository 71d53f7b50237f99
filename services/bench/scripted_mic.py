"""A stand-in microphone for one session: what a real one would publish, on a script.

It publishes 20 ms audio.frame messages in real time (each once its 20 ms have passed,
as capture does) over a quiet noise floor. `say()` mixes speech in from the next frame.
With `echo_dir`, it also hears the character: the WAV files playback is writing for the
session (WavSink flushes each block as it plays it) are read as they grow and mixed in at
`echo_gain_db`, as a microphone near a speaker would pick them up.

The barge-in tests and benchmark drive `marionette up` with it.
"""

import asyncio
import time
import wave
from collections import deque
from pathlib import Path

import numpy as np
import soxr

from contracts import AudioFrame
from contracts.limits import AUDIO_SAMPLE_RATE
from services.bus.stage import Publisher

FRAME_S = 0.02
FRAME_SAMPLES = int(AUDIO_SAMPLE_RATE * FRAME_S)
WAV_HEADER_BYTES = 44  # what the wave module writes for PCM


class _GrowingWav:
    """New samples of a WAV file that is still being written, at 16 kHz."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = WAV_HEADER_BYTES
        with wave.open(str(path)) as opened:
            rate = opened.getframerate()
        self.resampler = soxr.ResampleStream(rate, AUDIO_SAMPLE_RATE, 1, dtype="float32")

    def read_new(self) -> np.ndarray:
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        data = data[: len(data) // 2 * 2]
        self.offset += len(data)
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768
        resampled: np.ndarray = self.resampler.resample_chunk(samples)
        return resampled


class ScriptedMic:
    def __init__(
        self,
        frames: Publisher[AudioFrame],
        session: str,
        *,
        echo_dir: Path | None = None,
        echo_gain_db: float = -6.0,
        noise_dbfs: float = -60.0,
    ) -> None:
        self.frames = frames
        self.session = session
        self.echo_dir = echo_dir
        self.echo_gain = 10 ** (echo_gain_db / 20)
        self.noise = 10 ** (noise_dbfs / 20)
        self.run_id = f"mic{round(time.time() * 1000)}"
        self._speech: deque[float] = deque()
        self._echo: deque[float] = deque()
        self._wavs: dict[Path, _GrowingWav] = {}
        self._rng = np.random.default_rng(7)
        self._started = 0.0
        self._next = 0  # the next frame's number

    def say(self, audio: np.ndarray) -> float:
        """Speak 16 kHz float audio from the next frame on; returns when its first sample
        is captured (wall clock, as in captured_at)."""
        self._speech.clear()
        self._speech.extend(audio.tolist())
        return self._started + self._next * FRAME_S

    @property
    def speaking(self) -> bool:
        return bool(self._speech)

    async def run(self, stop: asyncio.Event) -> None:
        self._started = time.time()
        while not stop.is_set():
            captured_at = self._started + self._next * FRAME_S
            await asyncio.sleep(max(0.0, captured_at + FRAME_S - time.time()))
            await self.frames.publish(
                AudioFrame(
                    session_id=self.session, message_id=f"{self.run_id}:{self._next}",
                    seq=self._next, pcm=self._frame(), captured_at=captured_at,
                )
            )  # fmt: skip
            self._next += 1

    def _frame(self) -> bytes:
        audio = self._rng.normal(0, self.noise, FRAME_SAMPLES).astype(np.float32)
        audio += _take(self._speech)
        if self.echo_dir is not None:
            self._listen_to_playback(self.echo_dir / self.session)
            audio += _take(self._echo) * self.echo_gain
        return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()

    def _listen_to_playback(self, folder: Path) -> None:
        for path in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
            if path not in self._wavs:
                try:
                    self._wavs[path] = _GrowingWav(path)
                except (EOFError, wave.Error):
                    continue  # its header is not written yet
            self._echo.extend(self._wavs[path].read_new().tolist())


def _take(queue: deque[float]) -> np.ndarray:
    taken = [queue.popleft() for _ in range(min(FRAME_SAMPLES, len(queue)))]
    return np.pad(np.asarray(taken, dtype=np.float32), (0, FRAME_SAMPLES - len(taken)))
