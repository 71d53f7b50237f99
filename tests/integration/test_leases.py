"""Partition ownership: a lease per (stage, partition), a fair share each, a dead owner's
partitions taken over, and the writes of an owner that lost its lease refused."""

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts import PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import BusSettings, Producer
from services.bus.fencing import Fence, Fenced, Writes, run_writes
from services.bus.ownership import PartitionOwnership, lease_key
from services.bus.partitions import partition_of, partition_stream, stream_for
from tests.helpers import partition_owners, read_topic, viewer_chat, wait_until
from tests.integration.echo_worker import STARTED_LIST
from tests.integration.workers import echo_workers

pytestmark = pytest.mark.integration


def replica(client: Redis, name: str, lease_ms: int = 600) -> PartitionOwnership:
    return PartitionOwnership(client, group="g", replica_id=name, partitions=8, lease_ms=lease_ms)


async def settle(*replicas: PartitionOwnership, rounds: int = 4) -> None:
    for _ in range(rounds):
        for ownership in replicas:
            changes = await ownership.tick()
            for partition in changes.surplus:
                await ownership.release(partition)


async def test_partitions_spread_evenly_and_never_twice(redis_client: Redis) -> None:
    a, b, c = (replica(redis_client, n) for n in "abc")
    await settle(a, b, c)
    owned = [set(a.leases), set(b.leases), set(c.leases)]
    assert sorted(len(o) for o in owned) == [2, 3, 3]
    assert set().union(*owned) == set(range(8))
    assert sum(len(o) for o in owned) == 8, "no partition has two owners"
    for ownership in (a, b, c):
        for partition, lease in ownership.leases.items():
            stored = await redis_client.get(lease_key("g", partition))
            assert stored == lease.token.encode()
            holder, _, epoch_nonce = lease.token.partition("#")
            assert holder == ownership.replica_id
            epoch, _, nonce = epoch_nonce.partition(".")
            assert epoch.isdigit(), lease.token
            assert nonce, lease.token


async def test_a_dead_owners_partitions_are_taken_over(redis_client: Redis) -> None:
    a, b = replica(redis_client, "a"), replica(redis_client, "b")
    await settle(a, b)
    assert len(a.leases) == len(b.leases) == 4
    a_partitions = set(a.leases)
    # 'a' dies: it stops renewing. Before its leases expire, 'b' cannot take them.
    await b.tick()
    assert set(b.leases).isdisjoint(a_partitions)
    gained: set[int] = set()
    for _ in range(6):  # 'b' keeps renewing, as its lease loop does, while 'a' expires
        await asyncio.sleep(0.15)
        gained |= (await b.tick()).gained
    assert gained == a_partitions
    assert set(b.leases) == set(range(8))


async def test_a_lease_taken_by_another_is_reported_lost(redis_client: Redis) -> None:
    a = replica(redis_client, "a", lease_ms=300)
    await a.tick()
    stolen = min(a.leases)
    await asyncio.sleep(0.35)  # 'a' stalls past its lease
    await redis_client.set(lease_key("g", stolen), "b#99.abcd", px=5000)
    changes = await a.tick()
    assert stolen in changes.lost
    assert stolen not in a.leases
    assert a.fence(stolen) is None, "no fence to write behind for a partition not held"


async def test_the_first_tick_of_a_restarted_replica_takes_its_leases_back_at_once(
    redis_client: Redis,
) -> None:
    before = replica(redis_client, "tts-1", lease_ms=30_000)
    await before.tick()
    assert set(before.leases) == set(range(8))
    old_fences = {p: before.fence(p) for p in before.leases}
    # The process dies without releasing; another one starts under the same replica id,
    # long before the 30 s leases expire. Another replica gets nothing meanwhile.
    other = replica(redis_client, "tts-2", lease_ms=30_000)
    assert (await other.tick()).gained == set()
    after = replica(redis_client, "tts-1", lease_ms=30_000)
    changes = await after.tick()
    assert changes.gained == set(range(8))
    assert not changes.lost
    for partition, lease in after.leases.items():
        assert lease.token != before.leases[partition].token, "a new epoch"
        old = old_fences[partition]
        assert old is not None
        with pytest.raises(Fenced):  # the dead process's late writes are refused
            await run_writes(redis_client, old, Writes().set("late", "write", 60))
    assert await redis_client.get("late") is None
    # Only a replica of the same id takes a held lease: the other one still gets none.
    assert (await other.tick()).gained == set()


async def test_a_stale_owners_publish_and_ack_are_refused_after_a_takeover(
    redis_client: Redis,
) -> None:
    stream = partition_stream("chat.message", 0)
    await redis_client.xgroup_create(stream, "g", id="0", mkstream=True)
    entry_id = await redis_client.xadd(stream, {b"k": b"v"})
    await redis_client.xreadgroup("g", "a", {stream: ">"})
    a = replica(redis_client, "a", lease_ms=300)
    await a.tick()
    held = a.fence(0)
    assert held is not None
    # 'a' stalls past its lease; 'b' takes the partition over.
    await asyncio.sleep(0.4)
    b = replica(redis_client, "b", lease_ms=300)
    assert 0 in (await b.tick()).gained
    stale = Fence(lease_key("g", 0), held.token)

    with pytest.raises(Fenced):
        await run_writes(
            redis_client,
            stale,
            Writes().xadd(partition_stream("policy.token", 0), 1000, {b"k": b"v"}),
        )
    with pytest.raises(Fenced):
        await run_writes(redis_client, stale, Writes().xack(stream, "g", entry_id))
    assert await redis_client.exists(partition_stream("policy.token", 0)) == 0, (
        "nothing was published"
    )
    assert (await redis_client.xpending(stream, "g"))["pending"] == 1, "nor acknowledged"

    fresh = b.fence(0)
    assert fresh is not None
    await run_writes(redis_client, fresh, Writes().xack(stream, "g", entry_id))
    assert (await redis_client.xpending(stream, "g"))["pending"] == 0, "the new owner may"


async def test_a_stalled_replica_cannot_answer_a_message_another_took_over(
    bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    """A replica frozen (SIGSTOP) with a message in hand loses its lease; the new owner
    answers it; the frozen one, thawed, finds its writes refused: one answer only."""
    with echo_workers(bus_settings, tmp_path) as workers:
        workers.start("frozen", "--delay-s", "2")

        async def holds_all() -> bool:
            owners = await partition_owners(redis_client, "echo")
            return owners == dict.fromkeys(range(bus_settings.partitions), "frozen")

        await wait_until(holds_all, what="the first replica to hold every partition")
        async with Producer(bus_settings, "producer", [CHAT_MESSAGE]) as producer:
            await producer.publish(viewer_chat("s1", 0))

        async def in_hand() -> bool:
            return b"frozen s1 0" in await redis_client.lrange(STARTED_LIST, 0, -1)

        await wait_until(in_hand, what="the message to be in hand")
        workers.pause("frozen")
        workers.start("successor")
        partition = partition_of("s1", bus_settings.partitions)

        async def taken_over() -> bool:
            return (await partition_owners(redis_client, "echo")).get(partition) == "successor"

        await wait_until(taken_over, what="the successor to take the partition")

        async def answered() -> bool:
            return bool(await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions))

        await wait_until(answered, what="the successor to answer")
        workers.resume("frozen")
        await asyncio.sleep(3.0)  # the thawed replica finishes its sleep and tries to publish
        answers = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)
        assert workers.processes["frozen"].poll() is None, "the stale replica carried on"

    assert [(r.seq, r.text) for r in answers if isinstance(r, PolicyToken)] == [(0, "successor")]
    stream = stream_for(CHAT_MESSAGE, "s1", bus_settings.partitions)
    assert (await redis_client.xpending(stream, "echo"))["pending"] == 0
    assert await redis_client.xlen("dlq.chat.message") == 0


async def test_after_redis_was_away_a_replica_does_not_take_the_others_share(
    redis_client: Redis,
) -> None:
    """Both lost their leases in a Redis outage; the one back first must not take all the
    partitions (churn) while the other is still reconnecting."""
    a, b = replica(redis_client, "a"), replica(redis_client, "b")
    await settle(a, b)
    assert len(a.leases) == len(b.leases) == 4
    b.redis_away()  # b's renewals failed while Redis restarted
    await asyncio.sleep(0.7)  # every lease and membership lapsed meanwhile (600 ms)
    assert set(b.drop_expired())
    assert b.leases == {}
    await b.tick()
    assert len(b.leases) == 4, "it keeps to its share while the other may still come back"
    a.redis_away()
    a.drop_expired()
    await a.tick()
    assert len(a.leases) == 4
    assert set(a.leases).isdisjoint(b.leases)
