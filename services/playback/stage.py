"""playback: tts.chunk in; audio out, and playback.progress on the bus.

A reply does not start while the user is talking (asr.speech): it waits for them to stop.

Chunks of a turn are played in index order, each in short blocks, so that between two
blocks a pause holds the turn where it is and an interrupt ends it. An interrupted turn
reports `flushed` with how much was played and the text heard up to there.

Where a turn is (the chunk, the position in it, what was heard) is checkpointed every
quarter second of audio, so a replacement replica carries on from there after a crash: the
WAV file is cut back to that point and continued, and the turn still ends `finished` once.

A session whose speaker is remote (a client of the gateway's WS /ws/audio, which runs this
same turn logic for it: services.gateway.remote_speaker) is not played here.
"""

import asyncio
import logging
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from contracts import Control, Pause, PlaybackProgress, SpeechEvent, TtsChunk
from contracts.topics import ASR_SPEECH, CONTROL, PLAYBACK_PROGRESS, TTS_CHUNK
from services.audio_levels import loudest_dbfs
from services.bus import Bus, Checkpointed, Publishes, Stage, consumes
from services.playback.heard import heard_in_chunk
from services.playback.settings import PlaybackSettings
from services.playback.sinks import AudioSink, open_sink
from services.settings import load_settings

log = logging.getLogger("marionette.playback")

CHECKPOINT_S = 0.25
"""Audio played between two checkpoints of the position: at most this is heard twice."""
REMOTE_SPEAKER_TTL_S = 5
"""How long a gateway's claim on a session's speaker lasts unless it renews it (each second
while its client is connected)."""


def remote_speaker_key(session_id: str) -> str:
    """Set (to the gateway replica's id) while a remote client plays the session's replies."""
    return f"marionette:remote-speaker:{session_id}"


class TurnPosition(BaseModel):
    """Where a turn's playback is (checkpointed)."""

    next_index: int = 0
    chunk_played_s: float = 0.0  # into chunk next_index
    played_s: float = 0.0  # of the whole turn
    progress_seq: int = 0
    heard: list[str] = Field(default_factory=list)  # texts of the chunks played in full


def _unpaused() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class LiveTurn:
    """A turn being played by this replica (not checkpointed)."""

    may_play: asyncio.Event = field(default_factory=_unpaused)
    flushed: bool = False
    playing: TtsChunk | None = None
    reported_pause: bool = False  # "paused" went out while between chunks


@dataclass
class UserFloor:
    """Whether the user of a session is talking (from asr.speech)."""

    speaking: str | None = None  # the utterance's turn
    quiet: asyncio.Event = field(default_factory=_unpaused)


class PlaybackStage(Stage):
    name = "playback"
    interruptible = True
    progress = Publishes(PLAYBACK_PROGRESS)
    positions = Checkpointed(TurnPosition)

    def __init__(self, settings: PlaybackSettings, sink: AudioSink, bus: Bus) -> None:
        super().__init__(bus)
        self.settings = settings
        self.sink = sink
        self.live: dict[tuple[str, str], LiveTurn] = {}
        self.floors = bus.memory(lambda session: UserFloor())

    @classmethod
    async def build(cls, bus: Bus) -> "PlaybackStage":
        settings = load_settings(PlaybackSettings)
        sink = open_sink(settings.output, settings.device, settings.wav_dir, settings.realtime)
        log.info("playback to %s", type(sink).__name__)
        return cls(settings, sink, bus)

    @consumes(TTS_CHUNK)
    async def on_chunk(self, chunk: TtsChunk) -> None:
        if await self.bus.store.get(remote_speaker_key(chunk.session_id)) is not None:
            # A gateway plays this session to its remote client, and reports its progress:
            # played here too, it would be heard (and reported) twice. If that gateway dies
            # mid-reply its key expires within REMOTE_SPEAKER_TTL_S: the chunks skipped until
            # then are played nowhere (the rest of that reply is lost), later turns play here.
            return
        key = (chunk.session_id, chunk.turn_id or "")
        position = await self.positions.load(*key) or TurnPosition()
        if chunk.index < position.next_index:
            return  # played before a crash
        if chunk.index > position.next_index:
            log.warning("%s/%s: chunks %d..%d never came; going on", *key,
                        position.next_index, chunk.index - 1)  # fmt: skip
            position.next_index, position.chunk_played_s = chunk.index, 0.0
        live = self.live.get(key)
        if live is None:
            if position.played_s > 0:
                self.sink.resume_turn(*key, position.played_s)  # a turn begun before a crash
            else:
                await self._let_the_user_finish(chunk)
            live = self.live[key] = LiveTurn()
            if self.bus.interrupted(*key):  # while it waited for the user: not one word
                await self._flush(key, position, live)
                return
        if not await self._play(key, position, live, chunk):
            await self._flush(key, position, live)
            return
        position.heard.append(chunk.text)
        position.next_index += 1
        position.chunk_played_s = 0.0
        self.positions.save(*key, position)
        if chunk.final:
            # The file is complete before anyone hears that the reply finished.
            path = self.sink.end_turn(*key)
            self.live.pop(key, None)
            self.positions.forget(*key)
            await self._report(key, position, chunk.index, "finished")
            if path is not None:
                log.info("%s/%s: reply written to %s", *key, path)

    async def _let_the_user_finish(self, chunk: TtsChunk) -> None:
        """A reply ready while the user is still talking waits until they stop: the
        character does not start talking over them (and so never cuts their question)."""
        floor = self.floors[chunk.session_id]
        if floor.quiet.is_set():
            return
        try:
            await asyncio.wait_for(floor.quiet.wait(), self.settings.wait_for_user_s)
        except TimeoutError:
            log.info("%s/%s: the user has talked for %.0f s; starting the reply anyway",
                     chunk.session_id, chunk.turn_id, self.settings.wait_for_user_s)  # fmt: skip

    @consumes(ASR_SPEECH, drop_interrupted=False, while_off=True)
    async def on_speech(self, event: SpeechEvent) -> None:
        floor = self.floors[event.session_id]
        if event.state == "start":
            floor.speaking = event.turn_id
            floor.quiet.clear()
        elif floor.speaking == event.turn_id:
            floor.speaking = None
            floor.quiet.set()

    async def _play(
        self, key: tuple[str, str], position: TurnPosition, live: LiveTurn, chunk: TtsChunk
    ) -> bool:
        """Play a chunk block by block, from where it stood; False when interrupted."""
        live.playing = chunk
        level = loudest_dbfs(chunk.pcm, chunk.sample_rate)
        if live.may_play.is_set():
            await self._report(key, position, chunk.index, "playing", level, chunk=chunk)
        block = max(2, chunk.sample_rate * 2 * self.settings.block_ms // 1000 // 2 * 2)
        start = round(position.chunk_played_s * chunk.sample_rate) * 2
        since_checkpoint = 0.0
        for offset in range(start, len(chunk.pcm), block):
            if not live.may_play.is_set():
                await self._hold(key, position, live, chunk, level)
            if live.flushed:
                return False
            pcm = chunk.pcm[offset : offset + block]
            await self.sink.write(key[0], key[1], pcm, chunk.sample_rate)
            seconds = len(pcm) / 2 / chunk.sample_rate
            position.played_s += seconds
            position.chunk_played_s += seconds
            since_checkpoint += seconds
            if since_checkpoint >= CHECKPOINT_S:
                since_checkpoint = 0.0
                self.positions.save(*key, position)
                await self.bus.checkpoint()
        live.playing = None
        return not live.flushed

    async def _hold(
        self, key: tuple[str, str], position: TurnPosition, live: LiveTurn, chunk: TtsChunk,
        level: float,
    ) -> None:  # fmt: skip
        if not live.reported_pause:
            await self._report(key, position, chunk.index, "paused")
        try:
            await asyncio.wait_for(live.may_play.wait(), self.settings.max_pause_s)
        except TimeoutError:
            log.warning("%s/%s: paused for %.1f s and nobody said go on; going on",
                        *key, self.settings.max_pause_s)  # fmt: skip
            live.may_play.set()
        live.reported_pause = False
        if not live.flushed:
            await self._report(key, position, chunk.index, "playing", level, chunk=chunk)

    async def _flush(self, key: tuple[str, str], position: TurnPosition, live: LiveTurn) -> None:
        self.live.pop(key, None)
        self.positions.forget(*key)
        path = self.sink.end_turn(*key)
        heard = " ".join(t for t in [*position.heard, self._heard_of(live, position)] if t)
        index = live.playing.index if live.playing is not None else max(0, position.next_index - 1)
        await self._report(key, position, index, "flushed", heard=heard)
        log.info("%s/%s: interrupted after %.2f s of audio%s", *key, position.played_s,
                 f" ({path})" if path else "")  # fmt: skip

    @staticmethod
    def _heard_of(live: LiveTurn, position: TurnPosition) -> str:
        """The chunk in progress, up to the word being spoken where it stopped (by Piper's
        phoneme timings, else by the speech in its audio: services.playback.heard)."""
        chunk = live.playing
        if chunk is None:
            return ""
        return heard_in_chunk(chunk, position.chunk_played_s)

    @consumes(CONTROL)
    async def on_control(self, message: Control) -> None:
        command = message.command
        if not isinstance(command, Pause):
            return
        key = (message.session_id, command.target_turn_id)
        live = self.live.get(key)
        if live is None:
            return
        if not command.paused:
            # A pause reported between chunks is over: the next one is reported again.
            live.reported_pause = False
            live.may_play.set()
            return
        live.may_play.clear()
        if live.playing is None and not live.reported_pause:
            # Between chunks (the next is late): it is quiet now, and stays so.
            position = await self.positions.load(*key) or TurnPosition()
            live.reported_pause = True
            await self._report(key, position, max(0, position.next_index - 1), "paused")

    async def on_interrupt(self, session_id: str, turn_id: str) -> None:
        key = (session_id, turn_id)
        live = self.live.get(key)
        if live is None:
            return  # not begun here (its chunks will be dropped) or already over
        live.flushed = True
        live.may_play.set()  # a held turn wakes up to see it is over
        if live.playing is None:  # between chunks: nothing will notice, so now
            position = await self.positions.load(*key) or TurnPosition()
            await self._flush(key, position, live)

    async def _report(
        self, key: tuple[str, str], position: TurnPosition, index: int, state: str,
        level: float | None = None, heard: str | None = None, chunk: TtsChunk | None = None,
    ) -> None:  # fmt: skip
        seq = position.progress_seq
        position.progress_seq += 1
        if state not in ("finished", "flushed"):
            self.positions.save(*key, position)  # goes with this report
        remaining = None if chunk is None else chunk.duration_s - position.chunk_played_s
        await self.progress.publish(
            PlaybackProgress(
                session_id=key[0], turn_id=key[1], seq=seq, chunk_index=index,
                played_s=round(position.played_s, 3), state=state,
                level_dbfs=None if level is None else round(level, 1), heard_text=heard,
                remaining_s=None if remaining is None else round(max(0.0, remaining), 3),
            )
        )  # fmt: skip
