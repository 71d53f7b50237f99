"""Partition ownership: each partition of an ordered topic has one live owner at a time.

An owner holds an expiring lease key per partition and renews it; a replica that dies stops
renewing, its leases expire, and the live replicas take its partitions over. Replicas
announce themselves in a members set so that partitions spread evenly between them.
"""

import math
import zlib
from dataclasses import dataclass, field

from redis.asyncio import Redis

# Renew only what we still own: a lease that expired and was taken stays with its new owner.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class LeaseChanges:
    gained: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    surplus: set[int] = field(default_factory=set)


class PartitionLeases:
    def __init__(
        self,
        client: Redis,
        *,
        group: str,
        topic_name: str,
        replica_id: str,
        partitions: int,
        lease_ms: int,
    ) -> None:
        self._client = client
        self._prefix = f"marionette:lease:{group}:{topic_name}"
        self._members = f"marionette:members:{group}:{topic_name}"
        self.replica_id = replica_id
        self.partitions = partitions
        self.lease_ms = lease_ms
        self.owned: set[int] = set()
        # Start the search for free partitions at a replica-specific place, so that
        # replicas starting together do not all race for partition 0.
        self._offset = zlib.crc32(replica_id.encode()) % partitions

    def _key(self, partition: int) -> str:
        return f"{self._prefix}:{partition}"

    async def tick(self) -> LeaseChanges:
        """Renew, announce, and acquire up to a fair share. Call every lease_ms / 3."""
        changes = LeaseChanges()
        for partition in sorted(self.owned):
            if not await self._client.eval(
                _RENEW, 1, self._key(partition), self.replica_id, self.lease_ms
            ):
                changes.lost.add(partition)
        self.owned -= changes.lost

        seconds, micros = await self._client.time()
        now_ms = seconds * 1000 + micros // 1000
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(self._members, {self.replica_id: now_ms + self.lease_ms})
            pipe.zremrangebyscore(self._members, "-inf", now_ms)
            pipe.zcard(self._members)
            pipe.pexpire(self._members, self.lease_ms * 10)
            *_, live, _ = await pipe.execute()
        fair_share = math.ceil(self.partitions / max(int(live), 1))

        for step in range(self.partitions):
            if len(self.owned) >= fair_share:
                break
            partition = (self._offset + step) % self.partitions
            if partition in self.owned:
                continue
            if await self._client.set(
                self._key(partition), self.replica_id, nx=True, px=self.lease_ms
            ):
                self.owned.add(partition)
                changes.gained.add(partition)

        extra = len(self.owned) - fair_share
        if extra > 0:
            changes.surplus = set(sorted(self.owned, reverse=True)[:extra])
        return changes

    async def release(self, partition: int) -> None:
        self.owned.discard(partition)
        await self._client.eval(_RELEASE, 1, self._key(partition), self.replica_id)

    async def release_all(self) -> None:
        for partition in sorted(self.owned):
            await self.release(partition)
        await self._client.zrem(self._members, self.replica_id)
