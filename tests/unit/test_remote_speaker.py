"""The remote speaker in memory: what a /ws/audio client hears and is told, in real time,
and that the progress it reports is the one local playback would report."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pytest

from contracts import (
    Control,
    Interrupt,
    ModuleToggle,
    Panic,
    Pause,
    PlaybackProgress,
    SpeechEvent,
    TtsChunk,
)
from contracts.envelope import Envelope
from contracts.topics import ALL_TOPICS, PLAYBACK_PROGRESS, Topic
from services.bus.harness import StageHarness
from services.gateway.remote_speaker import RemoteSpeaker
from services.playback.settings import PlaybackSettings
from services.playback.stage import PlaybackStage, remote_speaker_key
from tests.unit.test_playback_stage import MemorySink, Output

RATE = 16_000
BLOCK_BYTES = RATE * 2 * 20 // 1000
TEXTS = ["Hello there, my friend!", "The weather is lovely today.", "Shall we play chess?"]
PROGRESS_FIELDS = (
    "session_id", "turn_id", "seq", "message_id", "chunk_index", "played_s", "state",
    "level_dbfs", "heard_text", "remaining_s",
)  # fmt: skip


@dataclass
class Sent:
    at: float  # monotonic
    data: Any  # a dict (JSON) or bytes (a block)


class Client:
    """A WebSocket as the speaker sees it: what it was sent, and when."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.changed = asyncio.Event()

    async def send_json(self, data: Any) -> None:
        self.sent.append(Sent(time.monotonic(), data))
        self.changed.set()

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(Sent(time.monotonic(), bytes(data)))
        self.changed.set()

    def messages(self) -> list[dict[str, Any]]:
        return [s.data for s in self.sent if isinstance(s.data, dict)]

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.messages()]

    def blocks(self) -> list[Sent]:
        return [s for s in self.sent if isinstance(s.data, bytes)]

    def audio(self) -> bytes:
        return b"".join(s.data for s in self.blocks())

    async def wait_for(self, kind: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The latest message of that type, once there is one."""
        await self._until(lambda: kind in self.kinds(), timeout_s)
        return [m for m in self.messages() if m["type"] == kind][-1]

    async def wait_for_blocks(self, count: int, timeout_s: float = 5.0) -> None:
        await self._until(lambda: len(self.blocks()) >= count, timeout_s)

    async def _until(self, condition: Callable[[], bool], timeout_s: float) -> None:
        async def met() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(met(), timeout_s)


def tone(seconds: float, level: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()


def chunks_of(texts: list[str], seconds: float = 0.2, session: str = "s1") -> list[TtsChunk]:
    return [
        TtsChunk(
            session_id=session, turn_id="t1", seq=n, index=n, final=n == len(texts) - 1,
            text=text, sample_rate=RATE, pcm=tone(seconds, 0.2 + 0.2 * n),
        )
        for n, text in enumerate(texts)
    ]  # fmt: skip


def control(
    command: Interrupt | Pause | Panic | ModuleToggle, seq: int = 0, session: str = "s1"
) -> Control:
    return Control(session_id=session, message_id=f"panel:{seq}", seq=seq, command=command)


def topic_of(message: Envelope) -> Topic[Any]:
    return next(t for t in ALL_TOPICS if type(message) is t.model)


class Speaker:
    """A RemoteSpeaker playing to a Client, and the progress it put on the bus."""

    def __init__(self) -> None:
        self.client = Client()
        self.published: list[PlaybackProgress] = []
        self.speaker = RemoteSpeaker("s1", self.client, self._publish, PlaybackSettings(), "gw")

    async def _publish(self, progress: PlaybackProgress) -> None:
        self.published.append(progress)

    async def send(self, *messages: Envelope) -> None:
        for message in messages:
            await self.speaker.deliver(topic_of(message), message)


@pytest.fixture
async def speaker() -> AsyncIterator[Speaker]:
    made = Speaker()
    playing = asyncio.create_task(made.speaker.run())
    yield made
    playing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await playing


async def test_chunks_are_sent_in_order_each_before_its_blocks_in_real_time(
    speaker: Speaker,
) -> None:
    chunks = chunks_of(TEXTS)
    await speaker.send(*chunks)
    await speaker.client.wait_for("finished")

    client = speaker.client
    assert client.kinds() == [
        "chunk", "playing", "chunk", "playing", "chunk", "playing", "finished",
    ]  # fmt: skip
    headers = [m for m in client.messages() if m["type"] == "chunk"]
    assert [(h["index"], h["text"], h["final"]) for h in headers] == [
        (n, text, n == 2) for n, text in enumerate(TEXTS)
    ]
    assert {(h["turn_id"], h["sample_rate"]) for h in headers} == {("t1", RATE)}
    # Each chunk's audio follows its header, in 20 ms blocks, every sample once.
    sent = client.sent
    for n, chunk in enumerate(chunks):
        start = sent.index(next(s for s in sent if s.data == headers[n]))
        end = next(i for i in range(start + 1, len(sent)) if isinstance(sent[i].data, dict)
                   and sent[i].data["type"] in ("chunk", "finished"))  # fmt: skip
        blocks = [s.data for s in sent[start:end] if isinstance(s.data, bytes)]
        assert b"".join(blocks) == chunk.pcm
        assert {len(b) for b in blocks} == {BLOCK_BYTES}
    # Paced: block k goes out when the k blocks before it have played, not earlier.
    timed = client.blocks()
    first = timed[0].at
    for k, block in enumerate(timed):
        assert block.at >= first + k * 0.02 - 0.005, f"block {k} came early"
    finished = next(s for s in sent if isinstance(s.data, dict) and s.data["type"] == "finished")
    total = sum(c.duration_s for c in chunks)
    assert total - 0.01 <= finished.at - first <= total + 0.25
    assert finished.data == {
        "type": "finished", "turn_id": "t1", "chunk_index": 2, "played_s": pytest.approx(total),
    }  # fmt: skip


async def test_a_pause_holds_the_audio_and_says_so_and_it_goes_on_from_there(
    speaker: Speaker,
) -> None:
    chunks = chunks_of(TEXTS, seconds=0.4)
    await speaker.send(*chunks)
    await speaker.client.wait_for_blocks(5)
    await speaker.send(control(Pause(target_turn_id="t1")))
    paused = await speaker.client.wait_for("paused")
    held = len(speaker.client.blocks())
    await asyncio.sleep(0.3)
    assert len(speaker.client.blocks()) == held, "quiet while paused"
    assert paused["played_s"] == pytest.approx(held * 0.02)
    await speaker.send(control(Pause(target_turn_id="t1", paused=False), seq=1))
    await speaker.client.wait_for("finished", timeout_s=10)
    assert speaker.client.audio() == b"".join(c.pcm for c in chunks), "nothing lost or repeated"
    assert speaker.client.kinds() == [
        "chunk", "playing", "paused", "playing", "chunk", "playing", "chunk", "playing",
        "finished",
    ]  # fmt: skip


async def test_an_interrupt_flushes_the_turn_with_what_was_heard(speaker: Speaker) -> None:
    chunks = chunks_of(TEXTS, seconds=1.0)
    await speaker.send(*chunks[:2])
    await speaker.client.wait_for_blocks(75)  # half-way into the second chunk
    await speaker.send(control(Interrupt(target_turn_id="t1")))
    flushed = await speaker.client.wait_for("flushed")
    await speaker.send(chunks[2])  # late: never played
    await asyncio.sleep(0.1)

    assert speaker.client.kinds()[-1] == "flushed"
    assert "finished" not in speaker.client.kinds()
    assert len(speaker.client.blocks()) <= 77, "it stops within a block"
    words = TEXTS[1].split()
    heard = flushed["heard_text"]
    assert heard.startswith(TEXTS[0] + " ")
    assert heard.removeprefix(TEXTS[0] + " ") in (
        " ".join(words[:n]) for n in range(len(words) // 2 - 1, len(words) // 2 + 2)
    )
    assert speaker.published[-1].state == "flushed"
    assert speaker.published[-1].heard_text == heard


async def test_a_panic_silences_it_and_it_plays_nothing_more(speaker: Speaker) -> None:
    chunks = chunks_of(TEXTS, seconds=1.0)
    await speaker.send(chunks[0])
    await speaker.client.wait_for_blocks(10)
    await speaker.send(control(Panic(), session="control"))  # for every session
    await speaker.client.wait_for("flushed")
    await speaker.send(*chunks[1:])
    await asyncio.sleep(0.1)
    assert len(speaker.client.blocks()) <= 12
    assert speaker.client.kinds() == ["chunk", "playing", "flushed"]


async def test_switched_off_as_playback_it_plays_nothing_until_switched_on(
    speaker: Speaker,
) -> None:
    off, on = (
        ModuleToggle(module="playback", enabled=False),
        ModuleToggle(module="playback", enabled=True),
    )
    await speaker.send(control(off, session="control"), chunks_of(TEXTS)[0])
    await asyncio.sleep(0.1)
    assert speaker.client.sent == []
    await speaker.send(control(on, seq=1, session="control"), *chunks_of(TEXTS)[1:])
    await speaker.client.wait_for("finished")
    assert speaker.client.audio() == b"".join(c.pcm for c in chunks_of(TEXTS)[1:])


async def test_a_reply_waits_for_the_user_to_stop_talking(speaker: Speaker) -> None:
    def speech(state: Literal["start", "end"]) -> SpeechEvent:
        return SpeechEvent(session_id="s1", turn_id="u1", seq=int(state == "end"),
                           state=state, at_s=1.0)  # fmt: skip

    await speaker.send(speech("start"), *chunks_of(TEXTS[:1]))
    await asyncio.sleep(0.2)
    assert speaker.client.blocks() == [], "it does not talk over the user"
    await speaker.send(speech("end"))
    await speaker.client.wait_for("finished")
    assert speaker.client.audio() == chunks_of(TEXTS[:1])[0].pcm


async def test_duplicates_and_other_sessions_are_not_played(speaker: Speaker) -> None:
    chunks = chunks_of(TEXTS)
    other = chunks_of(TEXTS[:1], session="s2")
    await speaker.send(chunks[0], chunks[0], other[0], chunks[1], chunks[1], chunks[2])
    await speaker.client.wait_for("finished")
    assert speaker.client.audio() == b"".join(c.pcm for c in chunks)
    assert speaker.client.kinds().count("chunk") == 3


async def as_local_playback(*messages: Envelope) -> list[PlaybackProgress]:
    """What PlaybackStage itself publishes for these messages (in memory, no pacing)."""
    settings = PlaybackSettings(realtime=False)
    harness = StageHarness(lambda bus: PlaybackStage(settings, MemorySink(Output()), bus))
    await harness.send(*messages)
    return list(harness.published(PLAYBACK_PROGRESS))


def comparable(progress: list[PlaybackProgress]) -> list[dict[str, Any]]:
    return [p.model_dump(include=set(PROGRESS_FIELDS)) for p in progress]


async def test_its_progress_is_what_local_playback_publishes(speaker: Speaker) -> None:
    chunks = chunks_of(TEXTS)
    await speaker.send(*chunks)
    await speaker.client.wait_for("finished")
    assert comparable(speaker.published) == comparable(await as_local_playback(*chunks))
    levels = [p.level_dbfs for p in speaker.published if p.state == "playing"]
    assert all(level is not None for level in levels), "asr's echo gate needs the level"


async def test_its_flushed_report_is_what_local_playback_publishes(speaker: Speaker) -> None:
    chunks = chunks_of(TEXTS)
    await speaker.send(chunks[0])
    await speaker.client.wait_for_blocks(10)
    await asyncio.sleep(0.25)  # the first chunk has played; the next is late
    interrupt = control(Interrupt(target_turn_id="t1"))
    await speaker.send(interrupt)
    await speaker.client.wait_for("flushed")
    expected = await as_local_playback(chunks[0], interrupt)
    assert comparable(speaker.published) == comparable(expected)
    assert speaker.published[-1].heard_text == TEXTS[0]


async def test_local_playback_plays_nothing_of_a_session_whose_speaker_is_remote() -> None:
    output = Output()
    settings = PlaybackSettings(realtime=False)
    harness = StageHarness(lambda bus: PlaybackStage(settings, MemorySink(output), bus))
    await harness.stored.store.set(remote_speaker_key("s1"), "gw-1", ex=5)
    await harness.send(*chunks_of(TEXTS), *chunks_of(TEXTS[:1], session="s2"))
    assert output.played("s1") == b""
    assert output.played("s2") == chunks_of(TEXTS[:1])[0].pcm
    assert {p.session_id for p in harness.published(PLAYBACK_PROGRESS)} == {"s2"}
