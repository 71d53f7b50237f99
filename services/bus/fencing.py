"""Fenced writes: what an owner of a partition writes, refused once it no longer owns it.

A partition's lease key holds its owner's token ("<replica>#<epoch>.<nonce>", a new one per
acquisition). Every write a stage makes for a partition (a publish, an acknowledgement, a
state checkpoint) is one Lua script that first compares the lease key with the writer's
token and does nothing if they differ, like a Kafka producer's epoch: a replica that lost
its lease (it stalled, Redis restarted, another took over) cannot publish a second answer or
acknowledge what the new owner is handling.

A write is a small batch of operations (`Writes`), run atomically after the check:
XADD (the publish), XACK, a dedup mark, state to set or delete, the crash bookkeeping of the
entry in hand. Every key is passed in KEYS, and the keys of a partition share its hash slot
(services.bus.partitions), so a Redis Cluster runs it on one node. The few writes that leave
the partition's slot (a dead letter, a control message) run just before, unfenced: a crash
in between may leave a dead letter or a control message twice, never lose one.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import ResponseError

from services.bus.connect import is_cluster

FENCED_ERROR = "MARIONETTE_FENCED"


class Fenced(RuntimeError):
    """This replica does not own the partition (any more): its write was refused."""


# ARGV[1] is the token (empty: no fence). Then, per operation: its name, how many keys it
# takes (next ones from KEYS[2..]) and how many arguments, then the arguments.
_WRITE = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('MARIONETTE_FENCED')
end
local k, a, result = 2, 2, false
while a <= #ARGV do
  local op, nkeys, nargs = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local key, args = KEYS[k], {}
  for i = 1, nargs do args[i] = ARGV[a + 2 + i] end
  if op == 'XADD' then
    -- args: maxlen (0: no trimming), then field, value, field, value...
    if args[1] == '0' then
      result = redis.call('XADD', key, '*', unpack(args, 2))
    else
      result = redis.call('XADD', key, 'MAXLEN', '~', args[1], '*', unpack(args, 2))
    end
  elseif op == 'XACK' then
    -- args: group, ids...
    redis.call('XACK', key, unpack(args))
  elseif op == 'MARK' then
    -- a high-water mark: raise, never lower. args: field, seq, ttl
    local current = tonumber(redis.call('HGET', key, args[1]) or '-1')
    if tonumber(args[2]) > current then redis.call('HSET', key, args[1], args[2]) end
    redis.call('EXPIRE', key, args[3])
  elseif op == 'SEEN' then
    redis.call('SET', key, 1, 'EX', args[1])
  elseif op == 'SET' then
    redis.call('SET', key, args[2], 'EX', args[1])
  elseif op == 'DEL' then
    redis.call('DEL', key)
  elseif op == 'DONE' then
    -- The entry in hand finished (or made progress): its crashes are forgiven.
    -- keys: in-hand marker, crash counts. args: entry id, marker value, 1 to clear the marker
    if args[3] == '1' and redis.call('GET', key) == args[2] then redis.call('DEL', key) end
    redis.call('HDEL', KEYS[k + 1], args[1])
  end
  k = k + nkeys
  a = a + 3 + nargs
end
return result
"""

# Before an entry is handled: is it a duplicate, and how often has it been in hand when its
# consumer died? The in-hand marker is "<entry id> <token>": found with another token, the
# entry was being handled by a consumer that is gone. KEYS: lease, dedup key, in-hand
# marker, crash counts. ARGV: token, dedup kind ("mark", "seen", or "none" for an entry
# re-driven from dead letters), mark field, seq, entry id, ttl.
_BEGIN = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('MARIONETTE_FENCED')
end
if ARGV[2] == 'mark' then
  local mark = redis.call('HGET', KEYS[2], ARGV[3])
  if mark and tonumber(mark) >= tonumber(ARGV[4]) then return -1 end
elseif ARGV[2] == 'seen' and redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local marker = ARGV[5] .. ' ' .. ARGV[1]
local previous = redis.call('GET', KEYS[3])
local crashes
if previous and previous ~= marker and string.sub(previous, 1, #ARGV[5] + 1) == ARGV[5] .. ' ' then
  crashes = redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
else
  crashes = tonumber(redis.call('HGET', KEYS[4], ARGV[5]) or '0')
end
redis.call('SET', KEYS[3], marker, 'EX', ARGV[6])
redis.call('EXPIRE', KEYS[4], ARGV[6])
return crashes
"""


@dataclass
class Writes:
    """A batch of writes to run atomically behind a fence (see the module docstring)."""

    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def _op(self, name: str, keys: list[str], *args: Any) -> "Writes":
        self.keys += keys
        self.args += [name, len(keys), len(args), *args]
        return self

    def xadd(self, stream: str, maxlen: int | None, fields: Mapping[bytes, Any]) -> "Writes":
        flat = [part for pair in fields.items() for part in pair]
        return self._op("XADD", [stream], maxlen or 0, *flat)

    def xack(self, stream: str, group: str, *entry_ids: bytes) -> "Writes":
        return self._op("XACK", [stream], group, *entry_ids) if entry_ids else self

    def mark(self, key: str, origin: str, seq: int, ttl_s: int) -> "Writes":
        return self._op("MARK", [key], origin, seq, ttl_s)

    def seen(self, key: str, ttl_s: int) -> "Writes":
        return self._op("SEEN", [key], ttl_s)

    def set(self, key: str, value: bytes | str, ttl_s: int) -> "Writes":
        return self._op("SET", [key], ttl_s, value)

    def delete(self, key: str) -> "Writes":
        return self._op("DEL", [key])

    def done(
        self, in_hand_key: str, crashes_key: str, entry_id: bytes, token: str, *, finished: bool
    ) -> "Writes":
        """The entry made progress (its crashes are forgiven) or, finished, left our hands."""
        marker = entry_id + b" " + token.encode()
        return self._op(
            "DONE", [in_hand_key, crashes_key], entry_id, marker, "1" if finished else "0"
        )

    def extend(self, other: "Writes") -> "Writes":
        self.keys += other.keys
        self.args += other.args
        return self

    def by_slot(self) -> dict[int, "Writes"]:
        """The operations grouped by the Redis Cluster slot of their first key, in order."""
        groups: dict[int, Writes] = {}
        k, a = 0, 0
        while a < len(self.args):
            nkeys, nargs = int(self.args[a + 1]), int(self.args[a + 2])
            keys = self.keys[k : k + nkeys]
            group = groups.setdefault(key_slot(keys[0].encode()), Writes())
            group.keys += keys
            group.args += self.args[a : a + 3 + nargs]
            k += nkeys
            a += 3 + nargs
        return groups

    def __bool__(self) -> bool:
        return bool(self.args)


@dataclass(frozen=True)
class Fence:
    """Where and with which token a replica writes for one partition (token '': no fence).

    held() says whether the replica still believes it owns the partition (its lease's
    local deadline has not passed); a write retried through an outage gives up when not."""

    lease_key: str
    token: str
    held: Callable[[], bool] = lambda: True

    @classmethod
    def none(cls) -> "Fence":
        """No fence: the scripts then skip the lease and take their first key in its place
        (one key less, and no key outside the slot of the others)."""
        return cls("", "")

    def lease_or(self, key: str) -> str:
        return self.lease_key if self.token else key


def _fenced(exc: ResponseError) -> bool:
    return FENCED_ERROR in str(exc)


async def run_writes(client: Redis, fence: Fence, writes: Writes) -> Any:
    """Run the batch behind the fence; returns the last XADD's entry id when it has one."""
    if is_cluster(client) and writes:
        return await _run_by_slot(client, fence, writes)
    return await _run(client, fence, writes)


async def _run(client: Redis, fence: Fence, writes: Writes) -> Any:
    lease = fence.lease_or(writes.keys[0] if writes.keys else "marionette:unfenced")
    try:
        return await client.eval(
            _WRITE, 1 + len(writes.keys), lease, *writes.keys, fence.token, *writes.args
        )
    except ResponseError as exc:
        if _fenced(exc):
            raise Fenced(f"lost the lease {fence.lease_key}; write refused") from None
        raise


async def _run_by_slot(client: Redis, fence: Fence, writes: Writes) -> Any:
    """On a cluster: what lies outside the fence's slot first (unfenced), then the rest."""
    groups = writes.by_slot()
    home = key_slot(fence.lease_key.encode()) if fence.token else next(iter(groups))
    result = None
    for slot, group in groups.items():
        if slot != home:
            result = await _run(client, Fence.none(), group) or result
    if home in groups:
        result = await _run(client, fence, groups[home]) or result
    return result


async def begin_entry(
    client: Redis,
    fence: Fence,
    *,
    dedup_key: str,
    mark_field: str | None,
    seq: int,
    check_duplicate: bool = True,
    in_hand_key: str,
    crashes_key: str,
    entry_id: bytes,
    ttl_s: int,
) -> int | None:
    """Mark the entry as in hand. None: it is a duplicate; else how often its consumer died
    while handling it before."""
    keys = [fence.lease_or(dedup_key), dedup_key, in_hand_key, crashes_key]
    kind = "none" if not check_duplicate else "mark" if mark_field is not None else "seen"
    args: list[str | int | bytes] = [fence.token, kind, mark_field or "", seq, entry_id, ttl_s]
    try:
        crashes = int(await client.eval(_BEGIN, len(keys), *keys, *args))
    except ResponseError as exc:
        if _fenced(exc):
            raise Fenced(f"lost the lease {fence.lease_key}; not handling") from None
        raise
    return None if crashes < 0 else crashes
