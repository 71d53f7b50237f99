"""capture: audio from a microphone, a file or stdin, published as audio.frame.

Frames are numbered from 0 per run, so seq x frame length is the input timeline. While
capture is switched off (module toggle, panic) its frames are read and dropped: the input
stays real-time, and asr hears nothing of it.
"""

import asyncio
import logging
import time
from pathlib import Path

import numpy as np

from contracts import AudioFrame
from contracts.envelope import message_id
from contracts.topics import AUDIO_FRAME
from services.bus import Bus, Publishes, Stage
from services.capture.framer import Framer
from services.capture.settings import CaptureSettings
from services.capture.sources import (
    AudioSource,
    CaptureError,
    FileSource,
    MicrophoneSource,
    StdinSource,
)
from services.settings import load_settings

log = logging.getLogger("marionette.capture")

SAMPLE_CONVERSATION = Path(__file__).parent / "assets" / "sample_conversation.wav"


def open_source(settings: CaptureSettings) -> AudioSource:
    """The configured input; with none, the microphone, else the bundled sample conversation."""
    if settings.input == "-":
        return StdinSource(settings.stdin_rate, settings.stdin_channels)
    if settings.input:
        return FileSource(Path(settings.input))
    try:
        return MicrophoneSource(settings.device)
    except CaptureError as exc:
        if settings.device is not None:
            raise
        log.warning("%s; playing the bundled sample conversation instead", exc)
        return FileSource(SAMPLE_CONVERSATION)


class CaptureStage(Stage):
    """Publishes its input as audio.frame until the input ends (then the process ends)."""

    name = "capture"
    frames = Publishes(AUDIO_FRAME)

    def __init__(self, settings: CaptureSettings, source: AudioSource, bus: Bus) -> None:
        super().__init__(bus)
        self.settings = settings
        self.source = source
        self.frames_published = 0

    @classmethod
    async def build(cls, bus: Bus) -> "CaptureStage":
        settings = load_settings(CaptureSettings)
        return cls(settings, open_source(settings), bus)

    async def background(self) -> None:
        await self.wait_for_asr()
        self.frames_published = await self.capture()

    async def wait_for_asr(self) -> None:
        """Until an asr replica runs: a sample file or a microphone started before asr is
        ready would be heard late (its frames queue), and its first turn answered slowly."""
        limit_s = self.settings.wait_for_asr_s
        deadline = time.monotonic() + limit_s
        if limit_s <= 0 or await self.bus.stage_running("asr"):
            return
        log.info("capture: waiting for asr to be ready (up to %.0f s)", limit_s)
        while not await self.bus.stage_running("asr"):
            if time.monotonic() > deadline:
                log.warning("capture: asr is not running after %.0f s; capturing anyway "
                            "(its frames wait in Redis)", limit_s)  # fmt: skip
                return
            await asyncio.sleep(0.2)
        log.info("capture: asr is ready")

    async def capture(self) -> int:
        """Publish the source's audio as frames; returns how many (not those dropped while
        switched off)."""
        settings, source = self.settings, self.source
        framer = Framer(source.sample_rate, settings.frame_ms)
        pace = settings.realtime and not source.realtime_source
        started = time.time()
        clock = time.monotonic()
        seq = dropped = 0
        # Frames are numbered from 0 in each capture run, and the run is their origin, so
        # a restarted capture is not taken for a redelivery of the previous run's frames.
        run_id = f"c{round(started * 1000)}"

        async def publish(frames: list[bytes], last: bool = False) -> None:
            nonlocal seq, dropped
            for number, pcm in enumerate(frames):
                if pace:
                    await asyncio.sleep(
                        max(0.0, clock + seq * settings.frame_ms / 1000 - time.monotonic())
                    )
                if self.bus.switched_off():
                    seq += 1  # the timeline goes on: frames later are where they belong
                    dropped += 1
                    continue
                await self.frames.publish(
                    AudioFrame(
                        session_id=settings.session_id, message_id=message_id(run_id, seq),
                        seq=seq, pcm=pcm, captured_at=started + seq * settings.frame_ms / 1000,
                        end_of_input=last and number == len(frames) - 1,
                    )
                )  # fmt: skip
                seq += 1

        async for block in source.blocks():
            await publish(framer.push(block))
        # The end: the rest, padded to a whole frame, marked as the last.
        tail = framer.push(np.zeros((0, 1), dtype=np.float32), last=True)
        await publish(tail or [bytes(settings.frame_ms * 32)], last=True)
        log.info(
            "capture: published %d frames (%.1f s) for session %s%s",
            seq - dropped,
            seq * settings.frame_ms / 1000,
            settings.session_id,
            f" ({dropped} dropped while switched off)" if dropped else "",
        )
        return seq - dropped
