"""Consumers killed with SIGKILL: their work is finished by another replica, once."""

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts import PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import Bus, BusSettings, Producer, Stage, StageRuntime, consumes
from services.bus.ownership import lease_key
from services.bus.partitions import partition_of, stream_for
from tests.helpers import partition_owners, read_topic, viewer_chat, wait_until
from tests.integration.echo_worker import STARTED_LIST
from tests.integration.workers import echo_workers

pytestmark = pytest.mark.integration


async def started(client: Redis) -> list[str]:
    return [row.decode() for row in await client.lrange(STARTED_LIST, 0, -1)]


async def replies(client: Redis, settings: BusSettings) -> list[PolicyToken]:
    found = await read_topic(client, POLICY_TOKEN, settings.partitions)
    return [r for r in found if isinstance(r, PolicyToken)]


async def test_message_of_killed_consumer_is_finished_by_another_replica_once(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    with echo_workers(bus_settings, tmp_path) as workers:
        workers.start("victim", "--delay-s", "3")
        async with Producer(bus_settings, "producer", [CHAT_MESSAGE]) as producer:
            await producer.publish(viewer_chat("s1", 7))

        async def victim_has_it() -> bool:
            return "victim s1 7" in await started(redis_client)

        await wait_until(victim_has_it, what="the victim to start on the message")
        workers.start("survivor")
        workers.kill("victim")

        async def answered() -> bool:
            return bool(await replies(redis_client, bus_settings))

        await wait_until(answered, what="the survivor to finish the message")
        await asyncio.sleep(1.0)  # room for a (wrong) second answer to show up
        answers = await replies(redis_client, bus_settings)

    assert [(r.seq, r.text) for r in answers] == [(7, "survivor")]
    assert await redis_client.xlen("dlq.chat.message") == 0
    stream = stream_for(CHAT_MESSAGE, "s1", bus_settings.partitions)
    pending = await redis_client.xpending(stream, "echo")
    assert pending["pending"] == 0


class Captions(Stage):
    """A downstream stage: what it handles is what a user would see or hear."""

    name = "captions"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.seen: list[int] = []

    @consumes(POLICY_TOKEN)
    async def on_token(self, token: PolicyToken) -> None:
        self.seen.append(token.seq)


async def test_redelivery_after_crash_between_publish_and_ack_has_one_visible_effect(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    with echo_workers(bus_settings, tmp_path) as workers:
        crashy = workers.start("crashy", "--crash-after", "3")
        async with (
            Producer(bus_settings, "producer", [CHAT_MESSAGE]) as producer,
            StageRuntime(Captions, bus_settings) as captions,
        ):
            for seq in range(6):
                await producer.publish(viewer_chat("s1", seq))
            await asyncio.to_thread(crashy.wait, 20)
            workers.start("steady")

            async def all_seen() -> bool:
                return sorted(set(captions.stage.seen)) == list(range(6))

            await wait_until(all_seen, what="every reply downstream")
            await asyncio.sleep(0.5)
            seen = list(captions.stage.seen)
        raw = await replies(redis_client, bus_settings)

    assert [r.seq for r in raw].count(3) == 2, "seq 3 was published, then redone after the crash"
    assert [r.text for r in raw if r.seq == 3] == ["crashy", "steady"]
    assert sorted(seen) == list(range(6)), "downstream handled each reply exactly once"


def sessions_on_distinct_partitions(count: int, partitions: int) -> list[str]:
    chosen: dict[int, str] = {}
    for n in range(1000):
        session = f"viewer-{n}"
        chosen.setdefault(partition_of(session, partitions), session)
        if len(chosen) == count:
            return [chosen[p] for p in sorted(chosen)]
    raise AssertionError("could not spread sessions over partitions")


async def test_ordered_replicas_keep_session_order_through_a_takeover(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    per_session = 60
    sessions = sessions_on_distinct_partitions(4, bus_settings.partitions)

    with echo_workers(bus_settings, tmp_path) as workers:
        workers.start("replica-a", "--delay-s", "0.01")
        workers.start("replica-b", "--delay-s", "0.01")

        async def both_hold_partitions() -> bool:
            owners = await partition_owners(redis_client, "echo")
            return len(owners) == 4 and set(owners.values()) == {"replica-a", "replica-b"}

        await wait_until(both_hold_partitions, what="the two replicas to share the partitions")
        async with Producer(bus_settings, "producer", [CHAT_MESSAGE]) as producer:
            for seq in range(per_session):
                if seq == per_session // 3:
                    workers.kill("replica-a")
                for session in sessions:
                    await producer.publish(viewer_chat(session, seq))
                await asyncio.sleep(0.01)

        async def all_answered() -> bool:
            answers = await replies(redis_client, bus_settings)
            return len({(r.session_id, r.seq) for r in answers}) == 4 * per_session

        await wait_until(all_answered, timeout_s=40, what="every message to be answered")
        answers = await replies(redis_client, bus_settings)

    answered_by: dict[str, set[str]] = {}
    for session in sessions:
        mine = [r for r in answers if r.session_id == session]
        seqs = [r.seq for r in mine]
        assert seqs == sorted(seqs), f"{session} was answered out of order: {seqs}"
        assert sorted(set(seqs)) == list(range(per_session)), f"{session} lost messages"
        answered_by[session] = {r.text for r in mine}
        assert mine[-1].text == "replica-b", "the survivor finished every session"
    taken_over = [
        s for s, replicas in answered_by.items() if replicas == {"replica-a", "replica-b"}
    ]
    assert taken_over, f"no partition of replica-a was taken over: {answered_by}"


async def test_a_replica_restarted_under_its_own_id_goes_on_without_waiting_for_its_leases(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    """`marionette up` restarts a dead stage under the same replica id: it takes back the
    partitions its dead predecessor still holds at once, not after lease_ms."""
    settings = bus_settings.model_copy(update={"lease_ms": 20_000})
    with echo_workers(settings, tmp_path) as workers:
        workers.start("tts-1", "--delay-s", "1")

        async def holds_all() -> bool:
            return await partition_owners(redis_client, "echo") == dict.fromkeys(
                range(settings.partitions), "tts-1"
            )

        await wait_until(holds_all, what="the replica to hold every partition")
        before = {
            p: await redis_client.get(lease_key("echo", p)) for p in range(settings.partitions)
        }
        async with Producer(settings, "producer", [CHAT_MESSAGE]) as producer:
            await producer.publish(viewer_chat("s1", 0))

        async def in_hand() -> bool:
            return "tts-1 s1 0" in await started(redis_client)

        await wait_until(in_hand, what="the replica to start on the message")
        workers.kill("tts-1")
        killed_at = time.monotonic()
        workers.restart("tts-1")

        async def answered() -> bool:
            return bool(await replies(redis_client, settings))

        await wait_until(answered, timeout_s=30, what="the restarted replica to answer")
        waited_s = time.monotonic() - killed_at
        after = {
            p: await redis_client.get(lease_key("echo", p)) for p in range(settings.partitions)
        }
        answers = await replies(redis_client, settings)

    assert waited_s < settings.lease_ms / 1000, f"it waited {waited_s:.1f} s for its leases"
    assert [(r.seq, r.text) for r in answers] == [(0, "tts-1")]
    assert await started(redis_client) == ["tts-1 s1 0", "tts-1 s1 0"]
    for partition, token in after.items():
        assert token is not None
        assert token.startswith(b"tts-1#"), token
        assert token != before[partition], "a new token: the dead process's writes are fenced"
