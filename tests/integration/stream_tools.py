"""What the OBS and VTube Studio tests share: a reply played by the real avatar and
playback stages (playback paced in real time into WAV files), from scripted tts.chunks."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import numpy as np

from contracts import Control, TtsChunk
from contracts.control import Command
from contracts.topics import CONTROL, TTS_CHUNK
from services.avatar.settings import AvatarSettings
from services.avatar.stage import AvatarStage
from services.bus import Bus, BusSettings, Producer, StageRuntime
from services.playback.settings import PlaybackSettings
from services.playback.sinks import WavSink
from services.playback.stage import PlaybackStage

RATE = 22_050
SESSION = "local"


def spoken(seconds: float) -> bytes:
    """Speech-like audio: a loud tone whose loudness rises and falls a few times a second,
    so the mouth track opens and shuts."""
    t = np.arange(int(RATE * seconds)) / RATE
    envelope = 0.15 + 0.85 * np.abs(np.sin(2 * np.pi * 2.5 * t))
    return (np.sin(2 * np.pi * 220 * t) * envelope * 20_000).astype("<i2").tobytes()


def chunk(turn: str, index: int, text: str, seconds: float, *, final: bool,
          expression: str = "happy") -> TtsChunk:  # fmt: skip
    return TtsChunk(session_id=SESSION, turn_id=turn, seq=index, index=index, text=text,
                    sample_rate=RATE, pcm=spoken(seconds), final=final,
                    expressions=[expression] if index == 0 else [])  # fmt: skip


def control(command: Command, n: int) -> Control:
    return Control(session_id=SESSION, message_id=f"test-control-{n}:0", seq=0, command=command)


@asynccontextmanager
async def speaking_stages(bus_settings: BusSettings, wav_dir: Path) -> AsyncIterator[Producer]:
    """Avatar and playback running; yields a producer for tts.chunk and control."""

    async def build_avatar(bus: Bus) -> AvatarStage:
        return AvatarStage(AvatarSettings(), bus)

    async def build_playback(bus: Bus) -> PlaybackStage:
        return PlaybackStage(PlaybackSettings(realtime=True), WavSink(wav_dir, True), bus)

    async with AsyncExitStack() as stack:
        await stack.enter_async_context(StageRuntime(AvatarStage, bus_settings, build=build_avatar))
        await stack.enter_async_context(
            StageRuntime(PlaybackStage, bus_settings, build=build_playback)
        )
        yield await stack.enter_async_context(
            Producer(bus_settings, "tts-stand-in", [TTS_CHUNK, CONTROL])
        )
