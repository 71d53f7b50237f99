"""playback: tts.chunk in; audio out, and playback.progress on the bus.

Chunks of a turn are played strictly in index order through a small jitter buffer: an
early chunk waits for the ones before it; if too many wait, the missing one is skipped.
"""

import asyncio
import logging
from dataclasses import dataclass, field

from contracts import PlaybackProgress, TtsChunk
from contracts.topics import PLAYBACK_PROGRESS, TTS_CHUNK
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.service_slot import ServiceSlot
from services.bus.settings import load_settings
from services.playback.settings import PlaybackSettings
from services.playback.sinks import AudioSink, open_sink

log = logging.getLogger("marionette.playback")

stage = Stage("playback")
progress_out = stage.publisher(PLAYBACK_PROGRESS)


@dataclass
class TurnPlayback:
    next_index: int = 0
    played_s: float = 0.0
    seq: int = 0
    waiting: dict[int, TtsChunk] = field(default_factory=dict)


class PlaybackService:
    def __init__(self, settings: PlaybackSettings, sink: AudioSink) -> None:
        self.settings = settings
        self.sink = sink
        self.turns: dict[tuple[str, str], TurnPlayback] = {}

    async def handle(self, chunk: TtsChunk) -> None:
        key = (chunk.session_id, chunk.turn_id or "")
        turn = self.turns.setdefault(key, TurnPlayback())
        if chunk.index < turn.next_index:
            return  # already played (a late duplicate)
        turn.waiting[chunk.index] = chunk
        if len(turn.waiting) > self.settings.jitter_chunks and turn.next_index not in turn.waiting:
            log.warning("%s/%s: chunk %d never came; skipping it", *key, turn.next_index)
            turn.next_index = min(turn.waiting)
        while turn.next_index in turn.waiting:
            ready = turn.waiting.pop(turn.next_index)
            await self._play(key, turn, ready)
            turn.next_index += 1
            if ready.final:
                # The file is complete before anyone hears that the reply finished.
                path = self.sink.end_turn(*key)
                del self.turns[key]
                await self._progress(key, turn, ready.index, "finished")
                if path is not None:
                    log.info("%s/%s: reply written to %s", *key, path)
                return

    async def _play(self, key: tuple[str, str], turn: TurnPlayback, chunk: TtsChunk) -> None:
        await self._progress(key, turn, chunk.index, "playing")
        if chunk.pcm:
            await self.sink.play(key[0], key[1], chunk.pcm, chunk.sample_rate)
        turn.played_s += chunk.duration_s

    async def _progress(
        self, key: tuple[str, str], turn: TurnPlayback, index: int, state: str
    ) -> None:
        await progress_out.publish(
            PlaybackProgress(
                session_id=key[0], turn_id=key[1], seq=turn.seq, chunk_index=index,
                played_s=round(turn.played_s, 3), state=state,
            )
        )  # fmt: skip
        turn.seq += 1


async def build_service() -> PlaybackService:
    settings = load_settings(PlaybackSettings)
    sink = open_sink(settings.output, settings.device, settings.wav_dir, settings.realtime)
    log.info("playback to %s", type(sink).__name__)
    return PlaybackService(settings, sink)


service = ServiceSlot(build_service)


@stage.consumer(TTS_CHUNK)
async def on_chunk(chunk: TtsChunk) -> None:
    await (await service.get()).handle(chunk)


async def main(bus: BusSettings, stop: asyncio.Event) -> None:
    await service.get()  # says which sink it plays to before the first reply
    await StageRuntime(stage, bus).run(stop)
