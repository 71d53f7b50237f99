"""capture: audio from a microphone, a file or stdin, published as audio.frame.

Frames are numbered from 0 per run, so seq x frame length is the input timeline.
"""

import asyncio
import logging
import time
from pathlib import Path

import numpy as np

from contracts import AudioFrame
from contracts.topics import AUDIO_FRAME
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.settings import load_settings
from services.capture.framer import Framer
from services.capture.settings import CaptureSettings
from services.capture.sources import (
    AudioSource,
    CaptureError,
    FileSource,
    MicrophoneSource,
    StdinSource,
)

log = logging.getLogger("marionette.capture")

stage = Stage("capture")
frames_out = stage.publisher(AUDIO_FRAME)


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


async def capture(settings: CaptureSettings, source: AudioSource) -> int:
    """Publish the source's audio as frames; returns how many. Call inside a StageRuntime."""
    framer = Framer(source.sample_rate, settings.frame_ms)
    pace = settings.realtime and not source.realtime_source
    started = time.time()
    clock = time.monotonic()
    seq = 0
    # Frames carry their capture run as turn id: a restarted capture counts seq from 0
    # again, and must not be taken for a redelivery of the previous run's frames.
    run_id = f"c{round(started * 1000)}"

    async def publish(frames: list[bytes]) -> None:
        nonlocal seq
        for pcm in frames:
            if pace:
                await asyncio.sleep(
                    max(0.0, clock + seq * settings.frame_ms / 1000 - time.monotonic())
                )
            captured_at = started + seq * settings.frame_ms / 1000
            await frames_out.publish(
                AudioFrame(
                    session_id=settings.session_id,
                    turn_id=run_id,
                    seq=seq,
                    pcm=pcm,
                    captured_at=captured_at,
                )
            )
            seq += 1

    async for block in source.blocks():
        await publish(framer.push(block))
    await publish(framer.push(np.zeros((0, 1), dtype=np.float32), last=True))
    log.info(
        "capture: published %d frames (%.1f s) for session %s",
        seq,
        seq * settings.frame_ms / 1000,
        settings.session_id,
    )
    return seq


async def run_capture(bus: BusSettings, settings: CaptureSettings) -> int:
    source = open_source(settings)
    async with StageRuntime(stage, bus):
        return await capture(settings, source)


async def main(bus: BusSettings, stop: asyncio.Event) -> None:
    """`marionette run capture`: capture until the input ends or stop is set."""
    settings = load_settings(CaptureSettings)
    work = asyncio.create_task(run_capture(bus, settings))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
    for task in (work, stopped):
        task.cancel()
    await asyncio.gather(work, stopped, return_exceptions=True)
    if work.done() and not work.cancelled() and work.exception():
        raise work.exception()  # type: ignore[misc]
