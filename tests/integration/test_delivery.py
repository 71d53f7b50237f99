"""Retries, dead letters, duplicates, malformed input and overflow, on a real Redis."""

import asyncio
import base64
import json

import pytest
from faststream.redis.parser.binary import BinaryMessageFormatV1
from redis.asyncio import Redis

from contracts import AudioFrame, ChatMessage, Control, Interrupt
from contracts.topics import AUDIO_FRAME, CHAT_MESSAGE, CONTROL
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.dead_letters import list_dead_letters, redrive
from services.bus.partitions import stream_for
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def chat(seq: int, text: str = "hello", session: str = "s1") -> ChatMessage:
    return ChatMessage(
        session_id=session, turn_id="t1", seq=seq, platform="twitch", author="viewer", text=text
    )


def frame(seq: int, pcm_bytes: int = 640) -> AudioFrame:
    return AudioFrame(session_id="mic", seq=seq, pcm=bytes(pcm_bytes), captured_at=float(seq))


async def test_failing_handler_is_retried_then_dead_lettered_then_redriven(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    attempts: list[str] = []
    handled: list[str] = []
    broken = True
    stage = Stage("flaky")

    @stage.consumer(CHAT_MESSAGE)
    async def on_chat(msg: ChatMessage) -> None:
        attempts.append(msg.text)
        if broken and msg.text == "poison":
            raise RuntimeError("boom")
        handled.append(msg.text)

    producer = Stage("producer")
    chats = producer.publisher(CHAT_MESSAGE)
    async with StageRuntime(producer, bus_settings), StageRuntime(stage, bus_settings) as rt:
        await chats.publish(chat(0, "poison"))
        await chats.publish(chat(1, "fine"))

        async def fine_handled() -> bool:
            return handled == ["fine"]

        await wait_until(fine_handled, what="the next message to be handled")
        letters = await list_dead_letters(redis_client, "chat.message")
        assert attempts.count("poison") == bus_settings.max_deliveries
        assert len(letters) == 1
        letter = letters[0]
        assert "RuntimeError: boom" in letter.reason
        assert letter.delivery_count == bus_settings.max_deliveries
        assert letter.consumer == rt.replica_id
        assert letter.group == "flaky"
        assert b'"text":"poison"' in letter.original[b"__data__"]

        broken = False
        await redrive(redis_client, "chat.message")

        async def poison_handled() -> bool:
            return "poison" in handled

        await wait_until(poison_handled, what="the re-driven message to be handled")
        assert await list_dead_letters(redis_client, "chat.message") == []


async def test_duplicates_are_dropped(bus_settings: BusSettings) -> None:
    handled: list[int] = []
    stage = Stage("dedup")

    @stage.consumer(CHAT_MESSAGE)
    async def on_chat(msg: ChatMessage) -> None:
        handled.append(msg.seq)

    @stage.consumer(CONTROL)
    async def on_control(msg: Control) -> None:
        handled.append(100 + msg.seq)

    producer = Stage("producer")
    chats, controls = producer.publisher(CHAT_MESSAGE), producer.publisher(CONTROL)
    async with StageRuntime(producer, bus_settings), StageRuntime(stage, bus_settings) as rt:
        for seq in (0, 1, 1, 0, 2):
            await chats.publish(chat(seq))
        interrupt = Control(
            session_id="s1", turn_id="t1", seq=5, command=Interrupt(target_turn_id="t1")
        )
        await controls.publish(interrupt)
        await controls.publish(interrupt)

        async def all_read() -> bool:
            stats = rt.stats("chat.message"), rt.stats("control")
            return sum(s.handled + s.duplicates for s in stats) == 7

        await wait_until(all_read, what="all seven entries")
    assert sorted(handled) == [0, 1, 2, 105]
    assert rt.stats("chat.message").duplicates == 2
    assert rt.stats("control").duplicates == 1


async def raw_entry(body: bytes) -> dict[bytes, bytes]:
    data = await BinaryMessageFormatV1.encode(
        message=body, reply_to=None, headers={"content-type": "application/json"},
        correlation_id="test",
    )  # fmt: skip
    return {b"__data__": data}


async def test_malformed_input_is_dead_lettered_with_a_reason_and_the_stage_goes_on(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    handled: list[int] = []
    stage = Stage("asr-like")

    @stage.consumer(AUDIO_FRAME)
    async def on_frame(msg: AudioFrame) -> None:
        handled.append(msg.seq)

    good = frame(1).model_dump(mode="json")

    def body(**changes: object) -> bytes:
        return json.dumps({**good, **changes}).encode()

    bad_entries: dict[str, dict[bytes, bytes]] = {
        "not the envelope": {b"text": b"hello"},
        "not FastStream": {b"__data__": b"\x00\x01 garbage"},
        "invalid JSON": await raw_entry(b'{"session_id": "mic", "seq": '),
        "unknown schema version": await raw_entry(body(schema_version=99)),
        "oversized PCM": await raw_entry(body(pcm=base64.b64encode(bytes(4000)).decode())),
        "wrong sample rate": await raw_entry(body(sample_rate=44100)),
    }
    expected_reason = {
        "not the envelope": "no __data__ field",
        "not FastStream": "not a FastStream message",
        "invalid JSON": "Invalid JSON",
        "unknown schema version": "unknown schema version 99",
        "oversized PCM": "at most 960 bytes",
        "wrong sample rate": "wrong sample rate 44100",
    }
    stream = stream_for(AUDIO_FRAME, "mic", bus_settings.partitions)  # type: ignore[arg-type]
    async with StageRuntime(stage, bus_settings):
        for fields in bad_entries.values():
            await redis_client.xadd(stream, fields)  # type: ignore[arg-type]
        producer = Stage("producer")
        frames = producer.publisher(AUDIO_FRAME)
        async with StageRuntime(producer, bus_settings):
            await frames.publish(frame(1))

        async def good_one_handled() -> bool:
            return handled == [1]

        await wait_until(good_one_handled, what="the valid frame after the bad ones")

    letters = await list_dead_letters(redis_client, "audio.frame")
    assert len(letters) == len(bad_entries)
    for letter, (case, fields) in zip(letters, bad_entries.items(), strict=True):
        assert expected_reason[case] in letter.reason, f"{case}: {letter.reason}"
        assert letter.original == fields, f"{case}: the original payload is kept"
        assert letter.source_stream == stream


async def test_entry_delivered_too_often_is_dead_lettered_without_running_the_handler(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    calls: list[int] = []
    stage = Stage("careful")

    @stage.consumer(CONTROL)
    async def on_control(msg: Control) -> None:
        calls.append(msg.seq)

    producer = Stage("producer")
    controls = producer.publisher(CONTROL)
    await redis_client.xgroup_create("control", "careful", id="0", mkstream=True)
    async with StageRuntime(producer, bus_settings):
        await controls.publish(
            Control(session_id="s1", seq=0, command=Interrupt(target_turn_id="t1"))
        )
    # A consumer that crashes on it every time: read, never acknowledged, read again...
    await redis_client.xreadgroup("careful", "crasher", {"control": ">"})
    for _ in range(bus_settings.max_deliveries - 1):
        await redis_client.xreadgroup("careful", "crasher", {"control": "0"})
    async with StageRuntime(stage, bus_settings):

        async def dead_lettered() -> bool:
            return await redis_client.xlen("dlq.control") == 1

        await wait_until(dead_lettered, what="the poison message to be dead-lettered")
    letters = await list_dead_letters(redis_client, "control")
    assert calls == []
    assert "delivered 4 times without an acknowledgement" in letters[0].reason


async def test_full_audio_queue_drops_the_oldest_frames(
    bus_settings: BusSettings,
) -> None:
    settings = bus_settings.model_copy(update={"queue_size": 2})
    handled: list[int] = []
    stage = Stage("slow-asr")

    @stage.consumer(AUDIO_FRAME)
    async def on_frame(msg: AudioFrame) -> None:
        handled.append(msg.seq)
        await asyncio.sleep(0.2)

    producer = Stage("producer")
    frames = producer.publisher(AUDIO_FRAME)
    async with StageRuntime(stage, settings) as rt:
        await asyncio.sleep(0.5)  # partitions taken, first read in flight
        async with StageRuntime(producer, settings):
            for seq in range(30):
                await frames.publish(frame(seq))

        async def drained() -> bool:
            return 29 in handled

        await wait_until(drained, what="the newest frame to be handled")
    assert rt.stats("audio.frame").dropped > 0
    assert len(handled) + rt.stats("audio.frame").dropped == 30
    assert handled == sorted(handled), "frames that survive keep their order"


async def test_lost_consumer_group_is_recreated(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    handled: list[int] = []
    stage = Stage("resilient")

    @stage.consumer(CHAT_MESSAGE)
    async def on_chat(msg: ChatMessage) -> None:
        handled.append(msg.seq)

    @stage.consumer(CONTROL)
    async def on_control(msg: Control) -> None:
        handled.append(100 + msg.seq)

    producer = Stage("producer")
    chats, controls = producer.publisher(CHAT_MESSAGE), producer.publisher(CONTROL)
    async with StageRuntime(stage, bus_settings), StageRuntime(producer, bus_settings):
        await chats.publish(chat(0))

        async def first_handled() -> bool:
            return handled == [0]

        await wait_until(first_handled, what="the first message")
        await redis_client.flushall()  # what a Redis restart without persistence does
        await chats.publish(chat(1, session="s2"))
        await controls.publish(
            Control(session_id="s2", seq=0, command=Interrupt(target_turn_id="t1"))
        )

        async def both_handled() -> bool:
            return sorted(handled) == [0, 1, 100]

        await wait_until(both_handled, timeout_s=10, what="messages after the group was lost")
