"""Drive the live pipeline like a microphone would, and time each turn from the streams.

A bench session streams 20 ms frames in real time without a pause: an utterance, then
silence until the reply has played (or, without a playback stage, until its last
tts.chunk), then the next utterance. Each turn is found by its asr.final and its end of
turn (asr.speech "end"), and timed with services.bench.timeline. A preemptive turn that
asr superseded (the utterance went on) is counted as a wasted generation, and the bench
follows the turn that replaced it.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from contracts import AsrFinal, AudioFrame, Control, Interrupt, SpeechEvent
from contracts.envelope import Envelope, message_id
from contracts.topics import (
    ASR_FINAL,
    ASR_SPEECH,
    AUDIO_FRAME,
    CONTROL,
    PLAYBACK_PROGRESS,
    POLICY_TOKEN,
    TTS_CHUNK,
    Topic,
)
from contracts.turns import SUPERSEDED, playback_ended
from services.bench.timeline import Published, breakdown
from services.bench.utterances import FRAME_BYTES, FRAME_S, Utterance
from services.bus import BusSettings, Producer
from services.bus.causes import cause_from_headers
from services.bus.partitions import stream_for, streams_of
from services.bus.wire import StreamEntry, decode_entry, entry_time

log = logging.getLogger("marionette.bench")

TURN_TIMEOUT_S = 120.0
HEARD_TIMEOUT_S = 20.0
"""After the end of speech; no asr.final by then means the utterance was not heard."""

READY_GROUPS: dict[str, Topic[Any]] = {"asr": AUDIO_FRAME, "policy": ASR_FINAL, "tts": POLICY_TOKEN}


@dataclass
class TurnResult:
    text: str
    heard: str = ""
    turn_id: str = ""
    parts: dict[str, float] = field(default_factory=dict)
    error: str = ""
    preemptive: bool = False  # its transcript went out before the end of turn
    wasted: int = 0  # preemptive replies dropped because the user went on


@dataclass
class TurnStreams:
    """The session's streams a turn is followed on."""

    finals: "StreamWatcher"
    speech: "StreamWatcher"
    controls: "StreamWatcher"
    tokens: "StreamWatcher"
    chunks: "StreamWatcher"
    progress: "StreamWatcher"
    playback: bool = True  # a playback stage runs: a turn ends when its reply has played

    @classmethod
    async def of(cls, client: Redis, session: str, partitions: int) -> "TurnStreams":
        topics = (ASR_FINAL, ASR_SPEECH, CONTROL, POLICY_TOKEN, TTS_CHUNK, PLAYBACK_PROGRESS)
        finals, speech, controls, tokens, chunks, progress = (
            StreamWatcher(client, topic, session, partitions) for topic in topics
        )
        playback = await has_group(client, TTS_CHUNK, "playback", partitions)
        return cls(finals, speech, controls, tokens, chunks, progress, playback)


class StreamWatcher:
    """Reads one session's messages of one topic as they are added."""

    def __init__(self, client: Redis, topic: Topic[Any], session: str, partitions: int) -> None:
        self.client = client
        self.topic = topic
        self.session = session
        self.stream = stream_for(topic, session, partitions)
        self.last_id = "0-0"

    async def new(self) -> list[tuple[Envelope, Published]]:
        rows = await self.client.xrange(self.stream, min=f"({self.last_id}")
        found = []
        for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], rows):
            self.last_id = entry_id.decode()
            decoded = decode_entry(StreamEntry(self.stream, entry_id, fields), self.topic, 10**9)
            if decoded.envelope.session_id != self.session:
                continue
            cause = cause_from_headers(decoded.headers)
            found.append((decoded.envelope, Published(entry_time(entry_id), cause)))
        return found


class Microphone:
    """Publishes frames in real time: queued utterances, else silence."""

    def __init__(self, publisher: Any, session: str) -> None:
        self.publisher = publisher
        self.session = session
        self.run_id = f"c{round(time.time() * 1000)}"
        self.queue: list[bytes] = []
        self.added_at: dict[int, float] = {}  # seq -> when its entry was added
        self.seq = 0
        # Stopped by a flag, not by cancelling: a cancellation that lands inside redis-py's
        # socket read can be lost, and the loop would then publish forever.
        self.stopped = asyncio.Event()

    def say(self, pcm: bytes) -> int:
        """Queue an utterance; returns the seq of its first frame."""
        pending = len(self.queue)
        pcm += b"\0" * (-len(pcm) % FRAME_BYTES)
        self.queue += [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        return self.seq + pending

    async def stream(self) -> None:
        started = time.monotonic()
        while not self.stopped.is_set():
            await asyncio.sleep(max(0.0, started + self.seq * FRAME_S - time.monotonic()))
            pcm = self.queue.pop(0) if self.queue else b"\0" * FRAME_BYTES
            frame = AudioFrame(
                session_id=self.session, message_id=message_id(self.run_id, self.seq),
                seq=self.seq, pcm=pcm, captured_at=time.time(),
            )  # fmt: skip
            self.added_at[self.seq] = entry_time(await self.publisher.publish(frame))
            self.seq += 1


async def wait_for_stages(
    client: Redis,
    partitions: int,
    timeout_s: float = 300.0,
    stages: dict[str, Topic[Any]] = READY_GROUPS,
) -> None:
    """Until each stage (by default asr, policy and tts) has its consumer group on the
    topic given: a stage creates them once loaded."""
    deadline = time.monotonic() + timeout_s
    for group, topic in stages.items():
        while not await has_group(client, topic, group, partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"stage {group} did not start within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


async def _listen_to_the_end(progress: StreamWatcher, turn_id: str) -> None:
    """Like a viewer, speak again only once the reply has played (a preemptive reply may
    be all synthesized before playback even starts it)."""
    deadline = time.monotonic() + TURN_TIMEOUT_S
    while time.monotonic() < deadline:
        for message, _ in await progress.new():
            if message.turn_id == turn_id and playback_ended(message):
                return
        await asyncio.sleep(0.1)


async def has_group(client: Redis, topic: Topic[Any], group: str, partitions: int) -> bool:
    """Whether a stage reads the topic: its consumer group is on the topic's first stream
    (a stage creates its groups once loaded)."""
    with contextlib.suppress(Exception):
        groups = await client.xinfo_groups(streams_of(topic, partitions)[0])
        return any(g["name"].decode() == group for g in groups)
    return False


async def _heard_turn(
    streams: TurnStreams, result: TurnResult, deadline: float
) -> tuple[Published, Published] | None:
    """The utterance's turn: its asr.final and its end of turn (either may come first),
    skipping preemptive turns that were superseded. None if it never came."""
    finals: dict[str, tuple[AsrFinal, Published]] = {}
    ends: dict[str, Published] = {}
    superseded: set[str] = set()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        for message, published in await streams.finals.new():
            if isinstance(message, AsrFinal) and message.turn_id:
                finals[message.turn_id] = (message, published)
        for message, published in await streams.speech.new():
            if isinstance(message, SpeechEvent) and message.state == "end" and message.turn_id:
                ends[message.turn_id] = published
        for message, _ in await streams.controls.new():
            command = message.command if isinstance(message, Control) else None
            if isinstance(command, Interrupt) and command.reason == SUPERSEDED:
                superseded.add(command.target_turn_id)
        for turn_id, (final, published) in finals.items():
            if turn_id in ends and turn_id not in superseded:
                result.heard, result.turn_id = final.text, turn_id
                result.preemptive = final.preemptive
                result.wasted = len(superseded & finals.keys())
                return published, ends[turn_id]
    return None


async def one_turn(mic: "Microphone", utterance: Utterance, streams: TurnStreams) -> TurnResult:
    result = TurnResult(utterance.text)
    first_seq = mic.say(utterance.pcm)
    end_sample = utterance.speech_end_sample
    end_seq = first_seq + end_sample // (FRAME_BYTES // 2)
    heard = await _heard_turn(
        streams, result, time.monotonic() + utterance.seconds + HEARD_TIMEOUT_S
    )
    if heard is None:
        result.error = "no asr.final and end of turn: the utterance was not heard"
        return result
    final, confirmed = heard
    first_token: Published | None = None
    first_chunk: Published | None = None
    deadline = time.monotonic() + TURN_TIMEOUT_S
    done = False
    while not done:
        if time.monotonic() > deadline:
            result.error = "the reply did not finish in time"
            return result
        await asyncio.sleep(0.05)
        for message, published in await streams.tokens.new():
            if message.turn_id == result.turn_id and getattr(message, "index", -1) == 0:
                first_token = published
        for message, published in await streams.chunks.new():
            if message.turn_id != result.turn_id:
                continue
            if getattr(message, "index", -1) == 0:
                first_chunk = published
            done = done or bool(getattr(message, "final", False))
    if first_token is None or first_chunk is None:
        result.error = "the reply had no tokens or no audio"
        return result
    if streams.playback:
        await _listen_to_the_end(streams.progress, result.turn_id)
    # The frame holding the last speech sample was added when it was full; the speech
    # itself ended that much earlier.
    samples_after = FRAME_BYTES // 2 - end_sample % (FRAME_BYTES // 2)
    speech_end_at = mic.added_at[end_seq] - samples_after / 16_000
    result.parts = breakdown(speech_end_at, final, first_token, first_chunk, confirmed)
    return result


async def run_turns(
    bus: BusSettings,
    utterances: list[Utterance],
    warmup: int = 1,
    report: Callable[[int, TurnResult], None] = lambda i, r: None,
) -> list[TurnResult]:
    """Speak each utterance into the live pipeline; the first `warmup` turns are not kept."""
    producer = Producer(bus, "bench", [AUDIO_FRAME])
    session = f"bench-{uuid.uuid4().hex[:8]}"
    client: Redis = Redis.from_url(bus.redis_url or "")
    results: list[TurnResult] = []
    try:
        await wait_for_stages(client, bus.partitions)
        streams = await TurnStreams.of(client, session, bus.partitions)
        async with producer:
            mic = Microphone(producer, session)
            streaming = asyncio.create_task(mic.stream())
            try:
                for number, utterance in enumerate(utterances):
                    result = await one_turn(mic, utterance, streams)
                    report(number, result)
                    if number >= warmup:
                        results.append(result)
            finally:
                mic.stopped.set()
                try:
                    await asyncio.wait_for(streaming, timeout=5)
                except TimeoutError:
                    log.warning("the bench microphone did not stop; abandoning it")
    finally:
        await client.aclose()
    return results
