"""Every key the bus keeps for a partition hashes to that partition's Redis Cluster slot.

A fenced write is one Lua script over the partition's lease, the streams it publishes to, its
dedup mark and its state; on a Redis Cluster a script may only touch keys of one slot. This
runs real stages on a real Redis (a single server: the slot is computed as a cluster would,
with redis-py's CRC16) and checks the keys they left.
"""

import re

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.crc import key_slot

from contracts import ChatMessage, PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import (
    Bus,
    BusSettings,
    Checkpointed,
    Producer,
    Publishes,
    Stage,
    StageRuntime,
    consumes,
)
from services.bus.partitions import partition_of, partition_tag
from tests.helpers import read_topic, viewer_chat, wait_until

pytestmark = pytest.mark.integration

SESSIONS = [f"viewer-{n}" for n in range(12)]

# Keys that belong to no partition: shared by a whole stage or by everyone.
UNPARTITIONED = re.compile(
    r"^(control|dlq\..*|marionette:(presence(:starts)?|switches|members:.*|cursor:.*"
    r"|[a-z]+:control:(in-hand|crashes)))$"
)


class Seen(BaseModel):
    count: int = 0


class CountingStage(Stage):
    """Keeps a count per session (checkpointed state) and answers each line."""

    name = "counting"
    replies = Publishes(POLICY_TOKEN)
    seen = Checkpointed(Seen)

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        seen = await self.seen.load(message.session_id) or Seen()
        self.seen.save(message.session_id, "", Seen(count=seen.count + 1))
        reply = PolicyToken(
            session_id=message.session_id, turn_id=message.turn_id, seq=message.seq,
            index=0, text=str(seen.count + 1),
        )  # fmt: skip
        await self.replies.publish(reply)


async def test_a_partitions_keys_share_its_slot(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    async with (
        StageRuntime(CountingStage, bus_settings),
        Producer(bus_settings, "producer", [CHAT_MESSAGE]) as producer,
    ):
        for seq, session in enumerate(SESSIONS, start=1):
            await producer.publish(viewer_chat(session, seq))

        async def all_answered() -> bool:
            found = await read_topic(redis_client, POLICY_TOKEN, bus_settings.partitions)
            return len({t.session_id for t in found}) == len(SESSIONS)

        await wait_until(all_answered, what="an answer to every session")
        keys = sorted([key.decode() async for key in redis_client.scan_iter(count=1000)])

    used = {partition_of(s, bus_settings.partitions) for s in SESSIONS}
    by_partition: dict[int, list[str]] = {p: [] for p in range(bus_settings.partitions)}
    for key in keys:
        tag = re.search(r"\{p(\d+)\}", key)
        if tag is None:
            assert UNPARTITIONED.match(key), f"{key} belongs to no partition's slot"
            continue
        by_partition[int(tag.group(1))].append(key)
    for partition in used:
        kept = by_partition[partition]
        slot = key_slot(partition_tag(partition).encode())
        assert {key_slot(k.encode()) for k in kept} == {slot}, kept
        kinds = " ".join(kept)
        for kind in ("chat.message.", "policy.token.", ":lease:", ":seen:", ":state:"):
            assert kind in kinds, f"partition {partition} has no {kind} key: {kept}"
    slots = {key_slot(partition_tag(p).encode()) for p in range(bus_settings.partitions)}
    assert len(slots) == bus_settings.partitions, "each partition has a slot of its own"
