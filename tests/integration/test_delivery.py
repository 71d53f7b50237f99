"""Retries, dead letters, crash charging, timeouts, duplicates, broadcast control, malformed
input and overflow, on a real Redis."""

import asyncio
import base64
import json
import signal
from pathlib import Path

import pytest
from faststream.redis.parser.binary import BinaryMessageFormatV1
from redis.asyncio import Redis

from contracts import AudioFrame, ChatMessage, Control, Interrupt, PolicyToken
from contracts.topics import AUDIO_FRAME, CHAT_MESSAGE, CONTROL, POLICY_TOKEN
from services.bus import Bus, BusSettings, Producer, Publishes, Stage, StageRuntime, consumes
from services.bus.dead_letters import list_dead_letters, redrive
from services.bus.partitions import partition_of, stream_for
from tests.helpers import partition_owners, read_topic, viewer_chat, wait_until
from tests.integration.echo_worker import STARTED_LIST
from tests.integration.workers import echo_workers

pytestmark = pytest.mark.integration


def chat(seq: int, text: str = "hello", session: str = "s1") -> ChatMessage:
    return ChatMessage(
        session_id=session, turn_id="t1", seq=seq, platform="twitch", author="viewer", text=text
    )


def frame(seq: int, pcm_bytes: int = 640) -> AudioFrame:
    return AudioFrame(
        session_id="mic", message_id=f"run1:{seq}", seq=seq, pcm=bytes(pcm_bytes),
        captured_at=float(seq),
    )  # fmt: skip


def interrupt(seq: int, session: str = "s1", turn: str = "t1") -> Control:
    return Control(session_id=session, seq=seq, command=Interrupt(target_turn_id=turn))


class Flaky(Stage):
    name = "flaky"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.attempts: list[str] = []
        self.handled: list[str] = []
        self.broken = True

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        self.attempts.append(message.text)
        if self.broken and message.text == "poison":
            raise RuntimeError("boom")
        self.handled.append(message.text)


async def test_failing_handler_is_retried_then_dead_lettered_then_redriven(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    async with (
        Producer(bus_settings, "producer", [CHAT_MESSAGE]) as producer,
        StageRuntime(Flaky, bus_settings) as rt,
    ):
        await producer.publish(chat(0, "poison"))
        await producer.publish(chat(1, "fine"))

        async def fine_handled() -> bool:
            return rt.stage.handled == ["fine"]

        await wait_until(fine_handled, what="the next message to be handled")
        letters = await list_dead_letters(redis_client, "chat.message")
        assert rt.stage.attempts.count("poison") == bus_settings.max_deliveries
        assert len(letters) == 1
        letter = letters[0]
        assert "RuntimeError: boom" in letter.reason
        assert f"attempt {bus_settings.max_deliveries} of" in letter.reason
        assert letter.delivery_count == bus_settings.max_deliveries
        assert letter.consumer == rt.replica_id
        assert letter.group == "flaky"
        assert b'"text":"poison"' in letter.original[b"__data__"]

        rt.stage.broken = False
        await redrive(redis_client, "chat.message")

        async def poison_handled() -> bool:
            return "poison" in rt.stage.handled

        await wait_until(poison_handled, what="the re-driven message to be handled")
        assert await list_dead_letters(redis_client, "chat.message") == []


class Stuck(Stage):
    """Hangs on "stuck" without publishing anything."""

    name = "stuck"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.attempts: list[str] = []
        self.handled: list[str] = []

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        self.attempts.append(message.text)
        if message.text == "stuck":
            await asyncio.sleep(3600)
        self.handled.append(message.text)


async def test_a_handler_past_its_timeout_without_progress_is_a_failed_attempt(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    settings = bus_settings.model_copy(update={"handler_timeout_s": 0.3})
    async with (
        Producer(settings, "producer", [CHAT_MESSAGE]) as producer,
        StageRuntime(Stuck, settings) as rt,
    ):
        await producer.publish(chat(0, "stuck"))
        await producer.publish(chat(1, "fine"))

        async def fine_handled() -> bool:
            return rt.stage.handled == ["fine"]

        await wait_until(fine_handled, what="the message after the stuck one")
    assert rt.stage.attempts == ["stuck"] * settings.max_deliveries + ["fine"]
    [letter] = await list_dead_letters(redis_client, "chat.message")
    assert "no progress for MARIONETTE_HANDLER_TIMEOUT_S=0.3 s" in letter.reason
    assert letter.delivery_count == settings.max_deliveries


class Talker(Stage):
    """Publishes a token every 0.1 s for a second: slow, but making progress."""

    name = "talker"
    tokens = Publishes(POLICY_TOKEN)

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.attempts = 0

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        self.attempts += 1
        for index in range(10):
            await asyncio.sleep(0.1)
            await self.tokens.publish(
                PolicyToken(
                    session_id=message.session_id, turn_id=message.turn_id, seq=index,
                    index=index, text="word ",
                )
            )  # fmt: skip


async def test_a_handler_that_keeps_publishing_may_run_past_the_timeout(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    settings = bus_settings.model_copy(update={"handler_timeout_s": 0.3})
    async with (
        Producer(settings, "producer", [CHAT_MESSAGE]) as producer,
        StageRuntime(Talker, settings) as rt,
    ):
        await producer.publish(chat(0))
        stream = stream_for(CHAT_MESSAGE, "s1", settings.partitions)

        async def acknowledged() -> bool:
            info = await redis_client.xinfo_groups(stream)
            return bool(info) and info[0]["pending"] == 0 and rt.stats("chat.message").handled == 1

        await wait_until(acknowledged, what="the long handler to finish")
    tokens = await read_topic(redis_client, POLICY_TOKEN, settings.partitions)
    assert [t.seq for t in tokens] == list(range(10))
    assert rt.stage.attempts == 1
    assert await redis_client.xlen("dlq.chat.message") == 0


async def started(client: Redis) -> list[str]:
    return [row.decode() for row in await client.lrange(STARTED_LIST, 0, -1)]


async def test_a_message_that_kills_its_consumer_every_time_is_dead_lettered(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    """Poison: seq 0 kills the process that handles it. Restarted each time (as `marionette
    up` does), the replica dead-letters it after MARIONETTE_MAX_DELIVERIES deaths without
    running it again, and the messages queued behind it are handled, never charged."""
    limit = bus_settings.max_deliveries
    async with Producer(bus_settings, "producer", [CHAT_MESSAGE]) as producer:
        for seq in range(3):
            await producer.publish(viewer_chat("s1", seq))
    with echo_workers(bus_settings, tmp_path) as workers:
        workers.start("poisoned", "--crash-before", "0")
        for _ in range(limit):
            code = await asyncio.to_thread(workers.wait_exit, "poisoned")
            assert code == -signal.SIGKILL, workers.log("poisoned")
            workers.restart("poisoned")

        async def rest_answered() -> bool:
            tokens = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)
            return sorted(t.seq for t in tokens) == [1, 2]

        await wait_until(rest_answered, what="the messages behind the poison to be answered")
        assert workers.processes["poisoned"].poll() is None, "the last replica lives on"
        runs = await started(redis_client)

    assert runs.count("poisoned s1 0") == limit, "the handler never ran a fourth time"
    assert runs.count("poisoned s1 1") == runs.count("poisoned s1 2") == 1
    [letter] = await list_dead_letters(redis_client, "chat.message")
    assert (
        f"its consumer died or stalled while handling it {limit} times "
        f"(MARIONETTE_MAX_DELIVERIES={limit})"
    ) in letter.reason
    assert letter.delivery_count == limit
    assert letter.consumer == "poisoned"
    assert b'"seq":0' in letter.original[b"__data__"]


async def test_an_entry_that_only_waited_in_a_killed_consumers_queue_is_never_charged(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    """Four kills, each with a different message in hand: the messages queued behind were
    delivered to a dead consumer more than MARIONETTE_MAX_DELIVERIES times, and still each
    one is answered, none dead-lettered."""
    kills = bus_settings.max_deliveries + 1
    count = kills + 2
    stream = stream_for(CHAT_MESSAGE, "s1", bus_settings.partitions)
    async with Producer(bus_settings, "producer", [CHAT_MESSAGE]) as producer:
        ids = [await producer.publish(viewer_chat("s1", seq)) for seq in range(count)]
    last_id = ids[-1]
    assert last_id is not None
    with echo_workers(bus_settings, tmp_path) as workers:
        workers.start("victim", "--delay-s", "1.5")
        for seq in range(kills):

            async def in_hand(seq: int = seq) -> bool:
                return f"victim s1 {seq}" in await started(redis_client)

            await wait_until(in_hand, what=f"seq {seq} in hand")
            workers.kill("victim")
            if seq < kills - 1:
                workers.restart("victim")
        [waiting] = await redis_client.xpending_range(stream, "echo", last_id, last_id, 1)
        assert waiting["times_delivered"] > bus_settings.max_deliveries, waiting
        workers.restart("victim")

        async def all_answered() -> bool:
            tokens = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)
            return len(tokens) == count

        await wait_until(all_answered, timeout_s=30, what="every message to be answered")
        await asyncio.sleep(0.5)  # room for a (wrong) second answer to show up
        tokens = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)
        runs = await started(redis_client)

    runs_per_seq = [runs.count(f"victim s1 {seq}") for seq in range(count)]
    assert runs_per_seq == [2] * kills + [1] * (count - kills), runs
    assert [t.seq for t in tokens] == list(range(count)), "each answered once, in order"
    assert await redis_client.xlen("dlq.chat.message") == 0
    assert (await redis_client.xpending(stream, "echo"))["pending"] == 0


class Dedup(Stage):
    name = "dedup"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.handled: list[int] = []

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        self.handled.append(message.seq)

    @consumes(CONTROL)
    async def on_control(self, message: Control) -> None:
        self.handled.append(100 + message.seq)


async def test_duplicates_are_dropped(bus_settings: BusSettings) -> None:
    async with (
        Producer(bus_settings, "producer", [CHAT_MESSAGE, CONTROL]) as producer,
        StageRuntime(Dedup, bus_settings) as rt,
    ):
        for seq in (0, 1, 1, 0, 2):
            await producer.publish(chat(seq))
        await producer.publish(interrupt(5))
        await producer.publish(interrupt(5))

        async def all_read() -> bool:
            stats = rt.stats("chat.message"), rt.stats("control")
            return sum(s.handled + s.duplicates for s in stats) == 7

        await wait_until(all_read, what="all seven entries")
    assert sorted(rt.stage.handled) == [0, 1, 2, 105]
    assert rt.stats("chat.message").duplicates == 2
    assert rt.stats("control").duplicates == 1


class Listener(Stage):
    name = "listener"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.seen: list[str] = []

    @consumes(CONTROL)
    async def on_control(self, message: Control) -> None:
        self.seen.append(message.message_id)


async def test_control_is_read_by_every_replica_without_a_consumer_group(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    """Control is broadcast: every replica of a stage handles each control message (the
    one that owns the turn acts on it); there is no group, so nothing stays pending."""
    async with (
        Producer(bus_settings, "producer", [CONTROL]) as producer,
        StageRuntime(Listener, bus_settings, replica_id="listener-a") as a,
        StageRuntime(Listener, bus_settings, replica_id="listener-b") as b,
    ):
        for seq in (5, 6):
            await producer.publish(interrupt(seq))

        async def both_saw_them() -> bool:
            return a.stage.seen == b.stage.seen == ["-:5", "-:6"]

        await wait_until(both_saw_them, what="both replicas to handle both control messages")
    assert await redis_client.xinfo_groups("control") == []


async def test_every_replica_reads_control_and_only_the_sessions_owner_answers_it(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    with echo_workers(bus_settings, tmp_path) as workers:
        workers.start("replica-a")
        workers.start("replica-b")

        async def sharing() -> bool:
            owners = await partition_owners(redis_client, "echo")
            return len(owners) == bus_settings.partitions and set(owners.values()) == {
                "replica-a",
                "replica-b",
            }

        await wait_until(sharing, what="the two replicas to share the partitions")
        owner = (await partition_owners(redis_client, "echo"))[
            partition_of("s1", bus_settings.partitions)
        ]
        async with Producer(bus_settings, "producer", [CONTROL]) as producer:
            await producer.publish(interrupt(7))

        async def both_read_it() -> bool:
            return {"replica-a s1 7", "replica-b s1 7"} <= set(await started(redis_client))

        await wait_until(both_read_it, what="both replicas to handle the control message")
        await asyncio.sleep(0.5)  # room for a (wrong) second answer to show up
        answers = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)
        runs = await started(redis_client)

    assert sorted(runs) == ["replica-a s1 7", "replica-b s1 7"], "once each"
    assert [(a.seq, getattr(a, "text", "")) for a in answers] == [(7, owner)]
    assert await redis_client.xinfo_groups("control") == [], "no group: nothing pending"


async def test_a_replica_handles_control_published_once_it_started_but_not_older_control(
    bus_settings: BusSettings,
) -> None:
    async with (
        Producer(bus_settings, "producer", [CONTROL]) as producer,
        StageRuntime(Listener, bus_settings, replica_id="listener-a") as a,
    ):
        await producer.publish(interrupt(5))

        async def first_seen() -> bool:
            return a.stage.seen == ["-:5"]

        await wait_until(first_seen, what="the first replica to handle the first message")
        async with StageRuntime(Listener, bus_settings, replica_id="listener-b") as late:
            await producer.publish(interrupt(6))

            async def both_saw_the_next() -> bool:
                return a.stage.seen[-1:] == late.stage.seen[-1:] == ["-:6"]

            await wait_until(both_saw_the_next, timeout_s=5, what="both to handle the next one")
            assert late.stage.seen == ["-:6"], "older control is not handled again"


async def test_control_sent_while_the_stage_was_down_is_handled_when_it_starts(
    bus_settings: BusSettings,
) -> None:
    async with Producer(bus_settings, "producer", [CONTROL]) as producer:
        await producer.publish(interrupt(3))
    async with StageRuntime(Listener, bus_settings) as rt:

        async def handled() -> bool:
            return rt.stage.seen == ["-:3"]

        await wait_until(handled, what="the control message sent before the stage started")


class Speaker(Stage):
    """Interruptible: the runtime drops the late messages of an interrupted turn."""

    name = "speaker"
    interruptible = True

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.spoken: list[str] = []

    @consumes(POLICY_TOKEN)
    async def on_token(self, token: PolicyToken) -> None:
        self.spoken.append(f"{token.turn_id}:{token.seq}")


def token(turn: str, seq: int, session: str = "s1") -> PolicyToken:
    return PolicyToken(session_id=session, turn_id=turn, seq=seq, index=seq, text="w ")


async def test_an_interrupt_sent_while_the_stage_was_down_still_drops_the_turn(
    bus_settings: BusSettings,
) -> None:
    """A starting replica reads back recent interrupts (MARIONETTE_CONTROL_HISTORY_S): the
    late messages of the interrupted turn are dropped, those waiting and those to come."""
    async with Producer(bus_settings, "producer", [CONTROL, POLICY_TOKEN]) as producer:
        await producer.publish(interrupt(0, turn="t1"))
        await producer.publish(token("t1", 0))
        await producer.publish(token("t2", 0))
        async with StageRuntime(Speaker, bus_settings) as rt:
            for seq in (1, 2):
                await producer.publish(token("t1", seq))
                await producer.publish(token("t2", seq))

            async def all_read() -> bool:
                stats = rt.stats("policy.token")
                return stats.handled + stats.stale == 6

            await wait_until(all_read, what="all six tokens")
    assert rt.stage.spoken == ["t2:0", "t2:1", "t2:2"]
    assert rt.stats("policy.token").stale == 3


class Busy(Stage):
    name = "busy"

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        await asyncio.sleep(0.001)


async def test_a_stage_stops_promptly_while_its_handlers_are_busy(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    for attempt in range(20):
        await redis_client.flushall()
        async with Producer(bus_settings, "producer", [CHAT_MESSAGE]) as producer:
            for seq in range(300):
                await producer.publish(viewer_chat("s1", seq))
        runtime = StageRuntime(Busy, bus_settings)
        await runtime.start()
        await asyncio.sleep(0.2)  # in the middle of the backlog
        stopping = asyncio.create_task(runtime.stop())
        done, _ = await asyncio.wait({stopping}, timeout=3)
        if not done:  # let the stuck workers go before failing, so nothing is left behind
            for task in asyncio.all_tasks():
                if task.get_name().startswith("busy/"):
                    task.cancel()
            await stopping
        assert done, f"stop() hung on attempt {attempt + 1} with handlers busy"


async def raw_entry(body: bytes) -> dict[bytes, bytes]:
    data = await BinaryMessageFormatV1.encode(
        message=body, reply_to=None, headers={"content-type": "application/json"},
        correlation_id="test",
    )  # fmt: skip
    return {b"__data__": data}


class AsrLike(Stage):
    name = "asr-like"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.handled: list[int] = []

    @consumes(AUDIO_FRAME)
    async def on_frame(self, message: AudioFrame) -> None:
        self.handled.append(message.seq)


async def test_malformed_input_is_dead_lettered_with_a_reason_and_the_stage_goes_on(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
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
    stream = stream_for(AUDIO_FRAME, "mic", bus_settings.partitions)
    async with StageRuntime(AsrLike, bus_settings) as rt:
        for fields in bad_entries.values():
            await redis_client.xadd(stream, fields)  # type: ignore[arg-type]
        async with Producer(bus_settings, "producer", [AUDIO_FRAME]) as producer:
            await producer.publish(frame(1))

        async def good_one_handled() -> bool:
            return rt.stage.handled == [1]

        await wait_until(good_one_handled, what="the valid frame after the bad ones")

    letters = await list_dead_letters(redis_client, "audio.frame")
    assert len(letters) == len(bad_entries)
    for letter, (case, fields) in zip(letters, bad_entries.items(), strict=True):
        assert expected_reason[case] in letter.reason, f"{case}: {letter.reason}"
        assert letter.original == fields, f"{case}: the original payload is kept"
        assert letter.source_stream == stream


class SlowAsr(Stage):
    name = "slow-asr"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.handled: list[int] = []

    @consumes(AUDIO_FRAME)
    async def on_frame(self, message: AudioFrame) -> None:
        self.handled.append(message.seq)
        await asyncio.sleep(0.2)


async def test_full_audio_queue_drops_the_oldest_frames(bus_settings: BusSettings) -> None:
    settings = bus_settings.model_copy(update={"queue_size": 2})
    async with StageRuntime(SlowAsr, settings) as rt:
        await asyncio.sleep(0.5)  # partitions taken, first read in flight
        async with Producer(settings, "producer", [AUDIO_FRAME]) as producer:
            for seq in range(30):
                await producer.publish(frame(seq))

        async def drained() -> bool:
            return 29 in rt.stage.handled

        await wait_until(drained, what="the newest frame to be handled")
    handled = rt.stage.handled
    assert rt.stats("audio.frame").dropped > 0
    assert len(handled) + rt.stats("audio.frame").dropped == 30
    assert handled == sorted(handled), "frames that survive keep their order"


async def test_lost_consumer_group_is_recreated(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    async with (
        StageRuntime(Dedup, bus_settings) as rt,
        Producer(bus_settings, "producer", [CHAT_MESSAGE, CONTROL]) as producer,
    ):
        await producer.publish(chat(0))

        async def first_handled() -> bool:
            return rt.stage.handled == [0]

        await wait_until(first_handled, what="the first message")
        await redis_client.flushall()  # what a Redis restart without persistence does
        await producer.publish(chat(1, session="s2"))
        await producer.publish(interrupt(0, session="s2"))

        async def both_handled() -> bool:
            return sorted(rt.stage.handled) == [0, 1, 100]

        await wait_until(both_handled, timeout_s=10, what="messages after the group was lost")
