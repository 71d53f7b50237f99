"""playback: tts.chunk in; audio out, and playback.progress on the bus.

Chunks of a turn are played strictly in index order through a small jitter buffer: an
early chunk waits for the ones before it; if too many wait, the missing one is skipped.

Control overtakes the audio: a chunk is played in short blocks, and between two blocks a
pause holds the turn where it is, and an interrupt ends it. An interrupted turn reports
`flushed` with how much was played and the text heard up to there; its later chunks are
dropped by turn id.
"""

import asyncio
import logging
from dataclasses import dataclass, field

from contracts import Control, Interrupt, Pause, PlaybackProgress, TtsChunk
from contracts.topics import CONTROL, PLAYBACK_PROGRESS, TTS_CHUNK
from services.audio_levels import loudest_dbfs
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.service_slot import ServiceSlot
from services.bus.settings import load_settings
from services.playback.settings import PlaybackSettings
from services.playback.sinks import AudioSink, open_sink

log = logging.getLogger("marionette.playback")

stage = Stage("playback")
progress_out = stage.publisher(PLAYBACK_PROGRESS)


def _unpaused() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class TurnPlayback:
    next_index: int = 0
    played_s: float = 0.0
    seq: int = 0
    waiting: dict[int, TtsChunk] = field(default_factory=dict)
    heard: list[str] = field(default_factory=list)  # texts of the chunks played in full
    playing: TtsChunk | None = None
    chunk_played_s: float = 0.0
    may_play: asyncio.Event = field(default_factory=_unpaused)
    flushed: bool = False

    def heard_text(self) -> str:
        """What was played, with the chunk in progress cut where it stopped."""
        texts = list(self.heard)
        chunk = self.playing
        if chunk is not None and chunk.duration_s > 0:
            words = chunk.text.split()
            spoken = int(len(words) * min(1.0, self.chunk_played_s / chunk.duration_s))
            texts.append(" ".join(words[:spoken]))
        return " ".join(t for t in texts if t)


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
        while turn.next_index in turn.waiting and not turn.flushed:
            ready = turn.waiting.pop(turn.next_index)
            if not await self._play(key, turn, ready):
                await self._flush(key, turn)
                return
            turn.next_index += 1
            if ready.final:
                # The file is complete before anyone hears that the reply finished.
                path = self.sink.end_turn(*key)
                del self.turns[key]
                await self._progress(key, turn, ready.index, "finished")
                if path is not None:
                    log.info("%s/%s: reply written to %s", *key, path)
                return

    async def _play(self, key: tuple[str, str], turn: TurnPlayback, chunk: TtsChunk) -> bool:
        """Play a chunk block by block; False when an interrupt stopped it."""
        turn.playing, turn.chunk_played_s = chunk, 0.0
        level = loudest_dbfs(chunk.pcm, chunk.sample_rate)
        await self._progress(key, turn, chunk.index, "playing", level)
        block = max(2, chunk.sample_rate * 2 * self.settings.block_ms // 1000 // 2 * 2)
        for start in range(0, len(chunk.pcm), block):
            if not turn.may_play.is_set():
                await self._hold(key, turn, chunk.index, level)
            if turn.flushed:
                return False
            pcm = chunk.pcm[start : start + block]
            await self.sink.write(key[0], key[1], pcm, chunk.sample_rate)
            seconds = len(pcm) / 2 / chunk.sample_rate
            turn.played_s += seconds
            turn.chunk_played_s += seconds
        turn.heard.append(chunk.text)
        turn.playing = None
        return not turn.flushed

    async def _hold(
        self, key: tuple[str, str], turn: TurnPlayback, index: int, level: float
    ) -> None:
        await self._progress(key, turn, index, "paused")
        try:
            await asyncio.wait_for(turn.may_play.wait(), self.settings.max_pause_s)
        except TimeoutError:
            log.warning("%s/%s: paused for %.1f s and nobody said go on; going on",
                        *key, self.settings.max_pause_s)  # fmt: skip
            turn.may_play.set()
        if not turn.flushed:
            await self._progress(key, turn, index, "playing", level)

    async def _flush(self, key: tuple[str, str], turn: TurnPlayback) -> None:
        self.turns.pop(key, None)
        path = self.sink.end_turn(*key)
        index = turn.playing.index if turn.playing is not None else max(0, turn.next_index - 1)
        await self._progress(key, turn, index, "flushed", heard=turn.heard_text())
        log.info("%s/%s: interrupted after %.2f s of audio%s", *key, turn.played_s,
                 f" ({path})" if path else "")  # fmt: skip

    async def control(self, message: Control) -> None:
        command = message.command
        if not isinstance(command, Interrupt | Pause):
            return
        key = (message.session_id, command.target_turn_id)
        turn = self.turns.get(key)
        if turn is None:
            return  # not begun (its chunks will be dropped) or already over
        if isinstance(command, Pause):
            if command.paused:
                turn.may_play.clear()
            else:
                turn.may_play.set()
            return
        turn.flushed = True
        turn.may_play.set()  # a held turn wakes up to see it is over
        if turn.playing is None:
            await self._flush(key, turn)  # between chunks: nothing will notice, so now

    async def _progress(
        self, key: tuple[str, str], turn: TurnPlayback, index: int, state: str,
        level: float | None = None, heard: str | None = None,
    ) -> None:  # fmt: skip
        await progress_out.publish(
            PlaybackProgress(
                session_id=key[0], turn_id=key[1], seq=turn.seq, chunk_index=index,
                played_s=round(turn.played_s, 3), state=state,
                level_dbfs=None if level is None else round(level, 1), heard_text=heard,
            )
        )  # fmt: skip
        turn.seq += 1


async def build_service() -> PlaybackService:
    settings = load_settings(PlaybackSettings)
    sink = open_sink(settings.output, settings.device, settings.wav_dir, settings.realtime)
    log.info("playback to %s", type(sink).__name__)
    return PlaybackService(settings, sink)


service = ServiceSlot(build_service)


@stage.consumer(TTS_CHUNK, drop_interrupted=True)
async def on_chunk(chunk: TtsChunk) -> None:
    await (await service.get()).handle(chunk)


@stage.consumer(CONTROL)
async def on_control(message: Control) -> None:
    stage.interrupted.note(message)
    await (await service.get()).control(message)


async def main(bus: BusSettings, stop: asyncio.Event) -> None:
    await service.get()  # says which sink it plays to before the first reply
    await StageRuntime(stage, bus).run(stop)
