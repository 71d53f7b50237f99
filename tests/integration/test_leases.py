"""Partition leases: a fair share each, and a dead owner's partitions taken over."""

import asyncio

import pytest
from redis.asyncio import Redis

from services.bus.leases import PartitionLeases

pytestmark = pytest.mark.integration


def replica(client: Redis, name: str, lease_ms: int = 600) -> PartitionLeases:
    return PartitionLeases(
        client, group="g", topic_name="t", replica_id=name, partitions=8, lease_ms=lease_ms
    )


async def settle(*replicas: PartitionLeases, rounds: int = 4) -> None:
    for _ in range(rounds):
        for leases in replicas:
            changes = await leases.tick()
            for partition in changes.surplus:
                await leases.release(partition)


async def test_partitions_spread_evenly_and_never_twice(redis_client: Redis) -> None:
    a, b, c = (replica(redis_client, n) for n in "abc")
    await settle(a, b, c)
    owned = [a.owned, b.owned, c.owned]
    assert sorted(len(o) for o in owned) == [2, 3, 3]
    assert set().union(*owned) == set(range(8))
    assert sum(len(o) for o in owned) == 8, "no partition has two owners"


async def test_a_dead_owners_partitions_are_taken_over(redis_client: Redis) -> None:
    a, b = replica(redis_client, "a"), replica(redis_client, "b")
    await settle(a, b)
    assert len(a.owned) == len(b.owned) == 4
    a_partitions = set(a.owned)
    # 'a' dies: it stops renewing. Before its leases expire, 'b' cannot take them.
    await b.tick()
    assert b.owned.isdisjoint(a_partitions)
    gained: set[int] = set()
    for _ in range(6):  # 'b' keeps renewing, as its lease loop does, while 'a' expires
        await asyncio.sleep(0.15)
        gained |= (await b.tick()).gained
    assert gained == a_partitions
    assert b.owned == set(range(8))


async def test_a_lease_taken_by_another_is_reported_lost(redis_client: Redis) -> None:
    a = replica(redis_client, "a", lease_ms=300)
    await a.tick()
    stolen = min(a.owned)
    await asyncio.sleep(0.35)  # 'a' stalls past its lease
    await redis_client.set(f"marionette:lease:g:t:{stolen}", "b", px=5000)
    changes = await a.tick()
    assert stolen in changes.lost
    assert stolen not in a.owned
