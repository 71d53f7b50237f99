"""`marionette record` / `replay` on a real Redis: exact round trips, stop conditions,
pacing, and flow control against a slow consumer."""

import asyncio
import math
import struct
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts import AudioFrame, ChatMessage, Control, Interrupt, PolicyToken, TtsChunk
from contracts.topics import (
    ALL_TOPICS,
    CHAT_MESSAGE,
    CONTROL,
    POLICY_TOKEN,
)
from services.bus import Bus, BusSettings, Producer, Stage, StageRuntime, consumes
from services.bus.partitions import partition_stream, stream_for
from services.replay.pacing import BACKLOG_WINDOW, CHECK_EVERY, live_backlog
from services.replay.recorder import RecordedList, Recorder, StopAfter
from services.replay.recording import Recording, RecordingHeader, RecordingWriter
from services.replay.replayer import replay_entries
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

Entries = dict[str, list[dict[bytes, bytes]]]


def tone(samples: int, rate: int, hz: float = 220.0) -> bytes:
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(samples)
    )


def chat(turn: str, seq: int = 0, text: str = "hello there") -> ChatMessage:
    return ChatMessage(
        session_id="s1", turn_id=turn, seq=seq, platform="twitch", author="viewer", text=text
    )


def reply(turn: str, text: str) -> list[PolicyToken | TtsChunk]:
    """What policy and tts publish for one turn: two tokens, a spoken chunk, the last one."""
    return [
        PolicyToken(session_id="s1", turn_id=turn, seq=0, index=0, text=text),
        PolicyToken(
            session_id="s1", turn_id=turn, seq=1, index=1, text="!", final=True,
            reply_text=f"{text}!", status="ok",
        ),
        TtsChunk(
            session_id="s1", turn_id=turn, seq=0, index=0, text=f"{text}!",
            sample_rate=22050, pcm=tone(4410, 22050),
        ),
        TtsChunk(
            session_id="s1", turn_id=turn, seq=1, index=1, final=True, text="",
            sample_rate=22050, pcm=b"",
        ),
    ]  # fmt: skip


def interrupt(seq: int) -> Control:
    return Control(session_id="s1", seq=seq, command=Interrupt(target_turn_id="t1"))


def producer(settings: BusSettings) -> Producer:
    """Publishes every kind of message through the real runtime (headers and all)."""
    return Producer(settings, "producer", ALL_TOPICS)


async def every_entry(client: Redis) -> Entries:
    found: Entries = {}
    for key in sorted(await client.keys("*")):
        if await client.type(key) == b"stream":
            found[key.decode()] = [fields for _, fields in await client.xrange(key)]
    return found


def other_db(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/1"


async def test_a_round_trip_reproduces_every_message_byte_for_byte(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.mrec"
    writer = RecordingWriter(path, RecordingHeader(tuple(t.name for t in ALL_TOPICS), 4))
    recorder = Recorder(redis_client, ALL_TOPICS, bus_settings.partitions, writer)
    stop = asyncio.Event()
    recording = asyncio.create_task(recorder.run(stop))
    await recorder.ready.wait()
    async with producer(bus_settings) as out:
        pcm = tone(320, 16000)
        frames = [
            AudioFrame(
                session_id=f"mic{s}", message_id=f"c1:{i}", seq=i, pcm=pcm, captured_at=1e9 + i
            )
            for i in range(60)
            for s in range(3)
        ]
        for message in [*frames, chat("t1"), *reply("t1", "Hi"), interrupt(0)]:
            await out.publish(message)
    await redis_client.xadd(partition_stream("chat.message", 0), {b"not": b"a FastStream message"})
    await asyncio.sleep(0.5)
    stop.set()
    stats = await recording
    writer.close()

    original = await every_entry(redis_client)
    recorded = sum(len(v) for v in original.values())
    assert stats.messages == recorded == 180 + 1 + 4 + 1 + 1
    assert not stats.lost
    raw_bytes = sum(len(k) + len(v) for e in original.values() for f in e for k, v in f.items())
    assert path.stat().st_size < 0.5 * raw_bytes, "PCM should be stored raw and compressed"

    target = Redis.from_url(other_db(bus_settings.redis_url or ""))
    try:
        await target.flushdb()
        sent = await replay_entries(target, Recording(path), bus_settings, speed=None)
        assert sum(sent.values()) == recorded
        assert await every_entry(target) == original
    finally:
        await target.aclose()


async def test_the_chosen_topics_only_are_recorded_and_replayed(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    sink = RecordedList()
    recorder = Recorder(redis_client, [CHAT_MESSAGE, POLICY_TOKEN], bus_settings.partitions, sink)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await recorder.ready.wait()
    async with producer(bus_settings) as out:
        for message in [chat("t1"), *reply("t1", "Hi")]:
            await out.publish(message)
    await asyncio.sleep(0.4)
    stop.set()
    stats = await task
    assert dict(stats.per_topic) == {"chat.message": 1, "policy.token": 2}
    assert {r.topic.name for r in sink.records if r.topic} == {"chat.message", "policy.token"}


async def test_the_recorder_stops_by_itself_once_the_turns_finished(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    sink = RecordedList()
    recorder = Recorder(redis_client, ALL_TOPICS, bus_settings.partitions, sink)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop, StopAfter(turns=2, linger_s=0.3)))
    await recorder.ready.wait()
    async with producer(bus_settings) as out:
        for turn in ("t1", "t2"):
            for message in [chat(turn), *reply(turn, f"Answer {turn}")]:
                await out.publish(message)
        stats = await asyncio.wait_for(task, 10)
    assert not stop.is_set()
    assert stats.turns_finished == 2
    assert stats.per_topic["tts.chunk"] == 4


async def test_a_duration_ends_the_recording(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    recorder = Recorder(redis_client, ALL_TOPICS, bus_settings.partitions, RecordedList())
    stats = await asyncio.wait_for(recorder.run(asyncio.Event(), StopAfter(duration_s=0.5)), 10)
    assert stats.seconds >= 0.5
    assert stats.messages == 0


class Listener(Stage):
    name = "listener"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.handled: list[str] = []

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        self.handled.append(message.text)


async def test_the_recorder_is_invisible_to_the_stages(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    sink = RecordedList()
    recorder = Recorder(redis_client, ALL_TOPICS, bus_settings.partitions, sink)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await recorder.ready.wait()
    async with StageRuntime(Listener, bus_settings) as listener, producer(bus_settings) as out:
        for seq in range(20):
            await out.publish(chat("t1", seq, f"line {seq}"))

        async def all_handled() -> bool:
            return len(listener.stage.handled) == 20

        await wait_until(all_handled, what="the listener to get every line")
    stop.set()
    await task
    assert len(sink.records) == 20
    groups = set()
    for stream in await redis_client.keys("chat.message.p*"):
        groups |= {g["name"] for g in await redis_client.xinfo_groups(stream)}
    assert groups <= {b"listener"}, "the recorder must not create consumer groups"


async def test_a_paced_replay_keeps_the_recorded_spacing_divided_by_the_speed(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "paced.mrec"
    writer = RecordingWriter(path, RecordingHeader(("control",), bus_settings.partitions))
    recorder = Recorder(redis_client, [CONTROL], bus_settings.partitions, writer)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await recorder.ready.wait()
    async with producer(bus_settings) as out:
        for seq in range(5):
            await out.publish(interrupt(seq))
            await asyncio.sleep(0.2)
    stop.set()
    await task
    writer.close()

    async def span_of_replay(speed: float) -> float:
        await redis_client.delete("control")
        await replay_entries(redis_client, Recording(path), bus_settings, speed=speed)
        ids = [int(i.split(b"-")[0]) for i, _ in await redis_client.xrange("control")]
        return (ids[-1] - ids[0]) / 1000

    at_pace = await span_of_replay(1.0)
    doubled = await span_of_replay(2.0)
    assert at_pace >= 0.75, "the recorded 0.8 s of spacing should be kept"
    assert doubled < 0.75 * at_pace


class SlowChat(Stage):
    name = "slow"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.handled = 0

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        await asyncio.sleep(0.002)
        self.handled += 1


async def record_chat_lines(settings: BusSettings, client: Redis, path: Path, count: int) -> str:
    """Record `count` chat lines of one session; the stream they were on, emptied again."""
    writer = RecordingWriter(path, RecordingHeader(("chat.message",), settings.partitions))
    recorder = Recorder(client, [CHAT_MESSAGE], settings.partitions, writer)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await recorder.ready.wait()
    async with producer(settings) as out:
        for seq in range(count):
            await out.publish(chat("t1", seq, f"line {seq}"))
    await asyncio.sleep(0.3)
    stop.set()
    await task
    writer.close()
    stream = stream_for(CHAT_MESSAGE, "s1", settings.partitions)
    await client.delete(stream)
    return stream


async def test_a_fast_replay_waits_for_a_slow_consumer(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    count = 600
    path = tmp_path / "many.mrec"
    stream = await record_chat_lines(bus_settings, redis_client, path, count)
    worst = 0
    replayed = asyncio.Event()

    async def watch() -> None:
        # Stopped by an event, not cancelled: redis-py may swallow a cancellation.
        nonlocal worst
        while not replayed.is_set():
            backlog, _ = await live_backlog(redis_client, stream)
            worst = max(worst, backlog)
            await asyncio.sleep(0.005)

    async with StageRuntime(SlowChat, bus_settings) as slow:
        await asyncio.sleep(0.3)  # the group and its consumer exist
        watcher = asyncio.create_task(watch())
        sent = await replay_entries(redis_client, Recording(path), bus_settings, speed=None)
        replayed.set()
        await watcher
        handled = slow.stage.handled

        async def caught_up() -> bool:
            return slow.stage.handled == count

        # Nothing was lost on the way. (Stopping with handlers busy can also hang: see
        # test_a_stage_stops_promptly_while_its_handlers_are_busy in test_delivery.py.)
        await wait_until(caught_up, what="the slow consumer to take every entry")
    assert sent["chat.message"] == count
    assert 0 < worst <= BACKLOG_WINDOW + CHECK_EVERY + 8
    assert handled > count - BACKLOG_WINDOW - CHECK_EVERY - 8


async def test_a_fast_replay_does_not_wait_on_a_group_nobody_runs(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "some.mrec"
    stream = await record_chat_lines(bus_settings, redis_client, path, 400)
    await redis_client.xgroup_create(stream, "left-over", id="0", mkstream=True)
    # "left-over" never reads: with nobody to wait for, the replay must not stall on it.
    sent = await asyncio.wait_for(
        replay_entries(redis_client, Recording(path), bus_settings, speed=None), 20
    )
    assert sent["chat.message"] == 400


async def test_entries_trimmed_before_the_recorder_read_them_are_counted_as_lost(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    sink = RecordedList()
    recorder = Recorder(redis_client, [CONTROL], bus_settings.partitions, sink)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await recorder.ready.wait()
    async with redis_client.pipeline(transaction=True) as burst:
        for seq in range(100):  # one MULTI: the recorder wakes once, after the trimming
            burst.xadd("control", {b"seq": str(seq).encode()}, maxlen=5, approximate=False)
        await burst.execute()
    await asyncio.sleep(0.3)
    stop.set()
    stats = await task
    assert len(sink.records) == 5
    assert dict(stats.lost) == {"control": 95}
