"""Partition ownership: each partition has one live owner per stage, fenced by a token.

A stage's replicas share its partitions: a partition's lease covers every ordered topic the
stage consumes (co-partitioning), so the replica that owns a session sees all of it (its
speech, its chat, its playback). The owner renews its lease every lease_ms / 4; a replica
that dies stops renewing, its leases expire, and the others take its partitions over.

Each acquisition writes a new token (a per-partition epoch) into the lease key; every write
the owner makes checks it (fencing.py). The owner also keeps a local deadline, taken before
each renewal is sent, and stops handling a partition as soon as that deadline passes
without a renewal: before the lease can expire in Redis, so before anyone else can own it.

A replica restarted under the same replica id (`marionette up` names them) may take back a
lease its dead predecessor still holds, at once, without waiting for it to expire.
"""

import math
import secrets
import time
import zlib
from dataclasses import dataclass, field

from redis.asyncio import Redis

from services.bus.fencing import Fence
from services.bus.partitions import partition_tag

# KEYS: lease, epoch counter. ARGV: replica id, lease ms, nonce, and the mode: "free" takes
# a lease nobody holds, "own" one that a dead process of our own replica id still holds,
# "keep" the lease this process held (ARGV[5], its token) when it still holds it.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if ARGV[4] == 'keep' then
  if current ~= ARGV[5] then return false end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return current
elseif ARGV[4] == 'free' then
  if current then return false end
elseif not current or string.sub(current, 1, #ARGV[1] + 1) ~= ARGV[1] .. '#' then
  return false
end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. '#' .. epoch .. '.' .. ARGV[3]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
"""
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

SAFETY = 0.85
"""The owner stops this far into its lease (from when it sent the renewal) at the latest."""


@dataclass
class Lease:
    token: str
    valid_until: float  # time.monotonic()


@dataclass
class LeaseChanges:
    gained: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    surplus: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.gained or self.lost or self.surplus)


def lease_key(group: str, partition: int) -> str:
    return f"marionette:lease:{group}:{partition_tag(partition)}"


class PartitionOwnership:
    def __init__(
        self, client: Redis, *, group: str, replica_id: str, partitions: int, lease_ms: int
    ) -> None:
        self._client = client
        self.group = group
        self.replica_id = replica_id
        self.partitions = partitions
        self.lease_ms = lease_ms
        self.leases: dict[int, Lease] = {}
        self._members = f"marionette:members:{group}"
        self._first_tick = True
        self._lapsed: dict[int, str] = {}  # partitions given up at their deadline: tokens
        self._members_seen = 1
        self._recovering_until = 0.0
        # Replicas starting together look for free partitions from different places.
        self._offset = zlib.crc32(replica_id.encode()) % partitions

    def fence(self, partition: int) -> Fence | None:
        """The fence to write behind for a partition held now, else None."""
        lease = self.leases.get(partition)
        if lease is None or time.monotonic() >= lease.valid_until:
            return None
        return Fence(lease_key(self.group, partition), lease.token)

    def redis_away(self) -> None:
        """A tick failed (Redis restarting?): for a while after it answers again, count the
        members seen before."""
        self._recovering_until = time.monotonic() + 2 * self.lease_ms / 1000

    def drop_expired(self) -> set[int]:
        """Give up the partitions whose local deadline passed without a renewal (Redis was
        away); the next tick takes back those whose lease still holds our token."""
        now = time.monotonic()
        expired = {p for p, lease in self.leases.items() if now >= lease.valid_until}
        for partition in expired:
            self._lapsed[partition] = self.leases.pop(partition).token
        return expired

    async def tick(self) -> LeaseChanges:
        """Renew, announce ourselves, acquire up to a fair share. Call every lease_ms / 4."""
        changes = LeaseChanges()
        sent = time.monotonic()
        held = sorted(self.leases)
        if held:
            async with self._client.pipeline(transaction=False) as pipe:
                for partition in held:
                    pipe.eval(_RENEW, 1, lease_key(self.group, partition),
                              self.leases[partition].token, self.lease_ms)  # fmt: skip
                renewed = await pipe.execute()
            for partition, ok in zip(held, renewed, strict=True):
                if ok:
                    self.leases[partition].valid_until = sent + self.lease_ms * SAFETY / 1000
                else:
                    changes.lost.add(partition)
                    del self.leases[partition]
        changes.lost |= self.drop_expired()

        seconds, micros = await self._client.time()
        now_ms = seconds * 1000 + micros // 1000
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(self._members, {self.replica_id: now_ms + self.lease_ms})
            pipe.zremrangebyscore(self._members, "-inf", now_ms)
            pipe.zcard(self._members)
            pipe.pexpire(self._members, self.lease_ms * 10)
            *_, live, _ = await pipe.execute()
        live = int(live)
        if time.monotonic() < self._recovering_until:
            # Just after Redis was away: the others may not have said they are alive again
            # yet. Count them as before, or this replica would take their share (churn).
            live = max(live, self._members_seen)
        else:
            self._members_seen = live
        fair_share = math.ceil(self.partitions / max(live, 1))

        if self._lapsed:
            # Nobody can have taken a lease that still holds our token: no churn after
            # a Redis restart that outlasted our deadline but not the lease.
            lapsed, self._lapsed = self._lapsed, {}
            changes.gained |= await self._acquire(list(lapsed), "keep", lapsed)
        if self._first_tick:
            # What our predecessor (same replica id, now dead) held is ours again at once.
            self._first_tick = False
            others = [p for p in range(self.partitions) if p not in self.leases]
            changes.gained |= await self._acquire(others, "own")
        for step in range(self.partitions):
            if len(self.leases) >= fair_share:
                break
            partition = (self._offset + step) % self.partitions
            if partition not in self.leases:
                changes.gained |= await self._acquire([partition], "free")

        extra = len(self.leases) - fair_share
        if extra > 0:
            changes.surplus = set(sorted(self.leases, reverse=True)[:extra])
        return changes

    async def _acquire(
        self, partitions: list[int], mode: str, tokens: dict[int, str] | None = None
    ) -> set[int]:
        sent = time.monotonic()
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.eval(
                    _ACQUIRE, 2, lease_key(self.group, partition),
                    f"marionette:epoch:{self.group}:{partition_tag(partition)}",
                    self.replica_id, self.lease_ms, secrets.token_hex(2), mode,
                    (tokens or {}).get(partition, ""),
                )  # fmt: skip
            replies = await pipe.execute()
        gained = set()
        for partition, token in zip(partitions, replies, strict=True):
            if token:
                valid_until = sent + self.lease_ms * SAFETY / 1000
                self.leases[partition] = Lease(_text(token), valid_until)
                gained.add(partition)
        return gained

    async def release(self, partition: int) -> None:
        lease = self.leases.pop(partition, None)
        if lease is not None:
            await self._client.eval(_RELEASE, 1, lease_key(self.group, partition), lease.token)

    async def release_all(self) -> None:
        for partition in sorted(self.leases):
            await self.release(partition)
        await self._client.zrem(self._members, self.replica_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
