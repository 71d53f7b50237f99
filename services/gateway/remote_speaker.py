"""The remote speaker: a session's replies played to a WebSocket client (WS /ws/audio) by
the playback stage's own turn logic.

Each connection runs a PlaybackStage of its own (services.playback.stage), so when a turn
starts (after the user stops talking), how it pauses, flushes and ends, what was heard,
and each report's level and remaining_s are exactly those of local playback. Only what
surrounds the stage differs:

- its sink (WebSocketSink) sends each 20 ms block to the client and paces it in real time,
  as WavSink does, so what playback reports is what the client is playing;
- its bus (SpeakerBus) lives in this process: progress goes out on the bus through the
  gateway (asr's echo gate and barge-in, policy's "what was heard" read it as they read
  local playback's) and to the client; its state is in memory (a connection that drops
  takes its turns with it); nothing is shared, in particular no remote-speaker key, so
  this stage never skips its own session;
- RemoteSpeaker does the runtime's part: it hands the session's tts.chunk, asr.speech and
  control, read from the streams, to the stage's handlers under the runtime's rules:
  duplicates dropped, an Interrupt noted and on_interrupt called, chunks of interrupted
  turns dropped, module toggles and panic obeyed as playback's (services.bus.switches),
  chunks handled one at a time while speech and control go in at once (a pause reaches a
  chunk as it plays).
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel

from contracts import Control, Interrupt, PlaybackProgress, TtsChunk
from contracts.envelope import Envelope
from contracts.topics import PLAYBACK_PROGRESS, TTS_CHUNK, Topic
from services.bus.interrupts import InterruptedTurns
from services.bus.stage import Consumer, KeyValue, MemoryKeyValue, Publisher, SessionMemory
from services.bus.switches import StageSwitch, SwitchBoard
from services.gateway.tail import StreamEvent
from services.gateway.tasks import stop_tasks
from services.playback.settings import PlaybackSettings
from services.playback.stage import PlaybackStage

BLOCK_MS = 20
"""The audio of one binary message to the client (whatever local playback's block_ms)."""
RECENT_CONTROLS = 1024
"""Control message ids remembered, to drop one published twice (as the runtime does)."""

M = TypeVar("M", bound=Envelope)
S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")


class SpeakerClient(Protocol):
    """What the speaker needs of a WebSocket (starlette's has both)."""

    async def send_json(self, data: Any) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...


class LockedClient:
    """One message at a time: the player and the control handlers both send, and a
    WebSocket must not have two sends in flight."""

    def __init__(self, client: SpeakerClient) -> None:
        self.client = client
        self._lock = asyncio.Lock()

    async def send_json(self, data: Any) -> None:
        async with self._lock:
            await self.client.send_json(data)

    async def send_bytes(self, data: bytes) -> None:
        async with self._lock:
            await self.client.send_bytes(data)


class WebSocketSink:
    """An AudioSink that sends each block as it should play: the next one goes out once this
    one has played (no drift; after a pause the clock starts afresh, as WavSink's)."""

    def __init__(self, client: SpeakerClient) -> None:
        self.client = client
        self._due = 0.0  # monotonic time the last block sent ends

    async def write(self, session: str, turn: str, pcm: bytes, sample_rate: int) -> None:
        await self.client.send_bytes(pcm)
        now = time.monotonic()
        self._due = max(self._due, now) + len(pcm) / 2 / sample_rate
        await asyncio.sleep(self._due - now)

    def end_turn(self, session: str, turn: str) -> Path | None:
        return None  # the client keeps what it wants

    def resume_turn(self, session: str, turn: str, played_s: float) -> None:
        return None  # never called: a connection's turns begin and end in this process


class _MemoryState(Generic[S]):
    """Checkpointed state kept in memory: a connection's turns do not outlive it."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], S] = {}

    async def load(self, session_id: str, key: str = "") -> S | None:
        return self.values.get((session_id, key))

    def save(self, session_id: str, key: str, value: S) -> None:
        self.values[(session_id, key)] = value

    def forget(self, session_id: str, key: str = "") -> None:
        self.values.pop((session_id, key), None)


class _Reporter:
    def __init__(self, report: Callable[[PlaybackProgress], Awaitable[None]]) -> None:
        self._report = report

    async def publish(self, message: PlaybackProgress) -> bytes | None:
        await self._report(message)
        return None


class SpeakerBus:
    """The Bus of a speaker's PlaybackStage (services.bus.stage.Bus)."""

    def __init__(
        self,
        replica_id: str,
        report: Callable[[PlaybackProgress], Awaitable[None]],
        switched_off: Callable[[], bool],
    ) -> None:
        self.replica_id = replica_id
        self._switched_off = switched_off
        self.store: KeyValue = MemoryKeyValue()  # its own, empty: never a remote speaker
        self.interrupts = InterruptedTurns()
        self._reporter = _Reporter(report)
        self._states: dict[str, _MemoryState[Any]] = {}

    def publisher(self, topic: Topic[M]) -> Publisher[M]:
        if topic.name != PLAYBACK_PROGRESS.name:
            raise TypeError(f"a remote speaker publishes playback.progress, not {topic.name}")
        return cast(Publisher[M], self._reporter)

    def state(self, name: str, model: type[S]) -> _MemoryState[S]:
        return cast(_MemoryState[S], self._states.setdefault(name, _MemoryState[S]()))

    def memory(self, make: Callable[[str], T]) -> SessionMemory[T]:
        return SessionMemory(make)

    def interrupted(self, session_id: str, turn_id: str | None) -> bool:
        return turn_id is not None and self.interrupts.covers_turn(session_id, turn_id)

    def switched_off(self) -> bool:
        return self._switched_off()

    def status_changed(self) -> None:
        pass  # a socket's speaker has no heartbeat of its own

    async def stage_running(self, stage: str) -> bool:
        return True  # it plays what reaches it; it waits for no stage

    def hold(self) -> None:
        return None  # nothing to acknowledge: the speaker reads without a consumer group

    def release(self, session_id: str, *, keep_last: int = 0) -> None:
        return None

    async def checkpoint(self) -> None:
        return None  # state is in memory only


def chunk_json(chunk: TtsChunk) -> dict[str, Any]:
    return {
        "type": "chunk", "turn_id": chunk.turn_id, "index": chunk.index, "text": chunk.text,
        "sample_rate": chunk.sample_rate, "final": chunk.final,
        "duration_s": round(chunk.duration_s, 3),
    }  # fmt: skip


def progress_json(progress: PlaybackProgress) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": progress.state, "turn_id": progress.turn_id,
        "chunk_index": progress.chunk_index, "played_s": progress.played_s,
    }  # fmt: skip
    if progress.state == "flushed":
        body["heard_text"] = progress.heard_text or ""
    return body


class RemoteSpeaker:
    """Plays one session's replies to one client; `await run(*feeds)` until cancelled."""

    def __init__(
        self,
        session: str,
        client: SpeakerClient,
        publish: Callable[[PlaybackProgress], Awaitable[Any]],
        settings: PlaybackSettings,
        replica_id: str,
    ) -> None:
        """publish: puts a progress report on the bus (the gateway's link)."""
        self.session = session
        self.client = LockedClient(client)
        self._publish = publish
        # Module toggles and panic switch the remote speaker as they switch playback. The
        # stages' runtimes store the switches; restore() takes them at the start.
        self.switch = StageSwitch(PlaybackStage.name, interrupt=self._interrupt)
        self.bus = SpeakerBus(replica_id, self._report, lambda: self.switch.off)
        configured = settings.model_copy(update={"block_ms": BLOCK_MS})
        self.stage = PlaybackStage(configured, WebSocketSink(self.client), self.bus)
        self._consumers = {c.topic.name: c for c in self.stage.consumers()}
        self._chunks: asyncio.Queue[TtsChunk] = asyncio.Queue()
        self._marks: dict[tuple[str, str], int] = {}
        self._controls: OrderedDict[str, None] = OrderedDict()

    @staticmethod
    def session_topics() -> list[Topic[Any]]:
        """What the speaker follows of its session: the ordered topics playback consumes."""
        return [c.topic for c in PlaybackStage.consumers() if c.topic.ordered]

    @staticmethod
    def shared_topics() -> list[Topic[Any]]:
        """What it follows of every session: control (a panic is for everyone)."""
        return [c.topic for c in PlaybackStage.consumers() if not c.topic.ordered]

    def restore(self, stored: SwitchBoard) -> None:
        """The switches as they stand (read before following control)."""
        self.switch.restore(stored)

    async def run(self, *feeds: AsyncIterator[StreamEvent]) -> None:
        """Follow the feeds and play; returns (or raises) as soon as one of them stops."""
        tasks = [asyncio.create_task(self._follow(feed)) for feed in feeds]
        tasks.append(asyncio.create_task(self._play(), name="speaker-play"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await stop_tasks(tasks)

    async def deliver(self, topic: Topic[Any], message: Envelope) -> None:
        """One message, in its stream's order (as the runtime hands it on)."""
        consumer = self._consumers.get(topic.name)
        if consumer is None:
            return
        if not topic.ordered:
            await self._on_control(consumer, message)
            return
        if message.session_id != self.session:
            return
        mark = (topic.name, message.origin)
        if message.seq <= self._marks.get(mark, -1):
            return  # published twice (a producer's retry)
        self._marks[mark] = message.seq
        if isinstance(message, TtsChunk):
            self._chunks.put_nowait(message)  # played in turn by _play
        else:
            await self._handle(consumer, message)

    async def _on_control(self, consumer: Consumer, message: Envelope) -> None:
        """The runtime's rules first (an Interrupt notes its turn and tells playback; a
        toggle or panic sets the switches), then playback's own handler. Control is never
        dropped as stale: a pause may name an interrupted turn."""
        if message.message_id in self._controls:
            return
        self._controls[message.message_id] = None
        while len(self._controls) > RECENT_CONTROLS:
            self._controls.popitem(last=False)
        if not isinstance(message, Control):
            return
        mine = message.session_id == self.session
        if mine and isinstance(message.command, Interrupt):
            await self._interrupt(message.session_id, message.command.target_turn_id)
        await self.switch.follow(message)
        if mine:
            await getattr(self.stage, consumer.method)(message)

    async def _interrupt(self, session_id: str, turn_id: str) -> None:
        if not self.bus.interrupted(session_id, turn_id):
            self.bus.interrupts.add(session_id, turn_id)
            await self.stage.on_interrupt(session_id, turn_id)

    def _muted(self, consumer: Consumer, message: Envelope) -> bool:
        """Not for the handler: a message of an interrupted turn, or playback switched off
        (but for its bookkeeping, which stays true meanwhile: while_off)."""
        stale = self.stage.drops_interrupted(consumer) and self.bus.interrupted(
            message.session_id, message.turn_id
        )
        return stale or (self.switch.off and not consumer.while_off)

    async def _handle(self, consumer: Consumer, message: Envelope) -> None:
        if self._muted(consumer, message):
            return
        if consumer.while_off:  # bookkeeping: no turn of its own that a panic would stop
            await getattr(self.stage, consumer.method)(message)
            return
        self.switch.turns.started(message)  # so that a panic interrupts it
        await getattr(self.stage, consumer.method)(message)
        self.switch.turns.finished(message)

    async def _follow(self, events: AsyncIterator[StreamEvent]) -> None:
        async for event in events:
            await self.deliver(event.topic, event.message)

    async def _play(self) -> None:
        consumer = self._consumers[TTS_CHUNK.name]
        while True:
            chunk = await self._chunks.get()
            if self._muted(consumer, chunk):
                continue
            await self.client.send_json(chunk_json(chunk))  # its blocks follow
            await self._handle(consumer, chunk)

    async def _report(self, progress: PlaybackProgress) -> None:
        await self._publish(progress)
        await self.client.send_json(progress_json(progress))
