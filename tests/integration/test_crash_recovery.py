"""Consumers killed with SIGKILL: their work is finished by another replica, once."""

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts import Control, Interrupt, PolicyToken
from contracts.topics import CHAT_MESSAGE, CONTROL, POLICY_TOKEN
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.partitions import partition_of
from tests.helpers import read_topic, viewer_chat, wait_until
from tests.integration.echo_worker import STARTED_LIST
from tests.integration.workers import echo_workers

pytestmark = pytest.mark.integration


def control(seq: int, session: str = "s1") -> Control:
    return Control(
        session_id=session, turn_id="t1", seq=seq, command=Interrupt(target_turn_id="t1")
    )


async def started(client: Redis) -> list[str]:
    return [row.decode() for row in await client.lrange(STARTED_LIST, 0, -1)]


async def test_message_of_killed_consumer_is_finished_by_another_replica_once(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    producer = Stage("producer")
    controls = producer.publisher(CONTROL)
    with echo_workers(bus_settings, tmp_path) as workers:
        workers.start("victim", "--delay-s", "3")
        async with StageRuntime(producer, bus_settings):
            await controls.publish(control(seq=7))

        async def victim_has_it() -> bool:
            return "victim s1 7" in await started(redis_client)

        await wait_until(victim_has_it, what="the victim to start on the message")
        workers.start("survivor")
        workers.kill("victim")

        async def answered() -> bool:
            return bool(await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions))

        await wait_until(answered, what="the survivor to finish the message")
        await asyncio.sleep(1.0)  # room for a (wrong) second answer to show up
        replies = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)

    assert [(r.seq, r.text) for r in replies if isinstance(r, PolicyToken)] == [(7, "survivor")]
    assert await redis_client.xlen("dlq.control") == 0
    pending = await redis_client.xpending("control", "echo")
    assert pending["pending"] == 0


async def test_redelivery_after_crash_between_publish_and_ack_has_one_visible_effect(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    producer = Stage("producer")
    controls = producer.publisher(CONTROL)
    # A downstream stage: what it handles is what a user would see or hear.
    captions = Stage("captions")
    seen: list[int] = []

    @captions.consumer(POLICY_TOKEN)
    async def on_token(token: PolicyToken) -> None:
        seen.append(token.seq)

    with echo_workers(bus_settings, tmp_path) as workers:
        crashy = workers.start("crashy", "--crash-on", "3")
        async with StageRuntime(producer, bus_settings), StageRuntime(captions, bus_settings):
            for seq in range(6):
                await controls.publish(control(seq))
            await asyncio.to_thread(crashy.wait, 20)
            workers.start("steady")

            async def all_seen() -> bool:
                return sorted(set(seen)) == list(range(6))

            await wait_until(all_seen, what="every reply downstream")
            await asyncio.sleep(0.5)
        raw = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)

    assert [r.seq for r in raw].count(3) == 2, "seq 3 was published, then redone after the crash"
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
    producer = Stage("producer")
    chats = producer.publisher(CHAT_MESSAGE)

    async def lease_holders() -> set[str]:
        keys = [k async for k in redis_client.scan_iter("marionette:lease:echo:chat.message:*")]
        return {(await redis_client.get(k) or b"").decode() for k in keys}

    with echo_workers(bus_settings, tmp_path) as workers:
        workers.start("replica-a", "--delay-s", "0.01")
        workers.start("replica-b", "--delay-s", "0.01")

        async def both_hold_partitions() -> bool:
            return await lease_holders() == {"replica-a", "replica-b"}

        await wait_until(both_hold_partitions, what="the two replicas to share the partitions")
        async with StageRuntime(producer, bus_settings):
            for seq in range(per_session):
                if seq == per_session // 3:
                    workers.kill("replica-a")
                for session in sessions:
                    await chats.publish(viewer_chat(session, seq))
                await asyncio.sleep(0.01)

        async def all_answered() -> bool:
            replies = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)
            return len({(r.session_id, r.seq) for r in replies}) == 4 * per_session

        await wait_until(all_answered, timeout_s=40, what="every message to be answered")
        replies = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)

    answered_by: dict[str, set[str]] = {}
    for session in sessions:
        mine = [r for r in replies if r.session_id == session and isinstance(r, PolicyToken)]
        seqs = [r.seq for r in mine]
        assert seqs == sorted(seqs), f"{session} was answered out of order: {seqs}"
        assert sorted(set(seqs)) == list(range(per_session)), f"{session} lost messages"
        answered_by[session] = {r.text for r in mine}
        assert mine[-1].text == "replica-b", "the survivor finished every session"
    taken_over = [
        s for s, replicas in answered_by.items() if replicas == {"replica-a", "replica-b"}
    ]
    assert taken_over, f"no partition of replica-a was taken over: {answered_by}"
