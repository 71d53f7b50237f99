"""The bus on a real Redis Cluster of three masters (tests/redis_cluster.py): a partition's
keys live on one node, a conversation is answered once, replicas share and take over the
partitions (a SIGKILLed one included), and a poison message reaches dead letters, which live
in another slot than the partition it came from."""

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from contracts import ChatMessage, PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import BusSettings, Producer, Stage, StageRuntime, consumes, load_bus_settings
from services.bus.connect import bus_client
from services.bus.dead_letters import dead_letter_stream
from services.bus.partitions import stream_for
from services.bus.redis_server import EmbeddedRedis
from services.gateway.tail import StreamTail
from tests.helpers import partition_owners, read_topic, viewer_chat, wait_until
from tests.integration.echo_worker import STARTED_LIST
from tests.integration.test_hash_slots import CountingStage
from tests.integration.workers import echo_workers, worker_env
from tests.redis_cluster import redis_cluster

pytestmark = pytest.mark.integration

SESSIONS = [f"viewer-{n}" for n in range(12)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[EmbeddedRedis]]:
    with redis_cluster(masters=3) as nodes:
        yield nodes


@pytest.fixture
def cluster_settings(cluster: list[EmbeddedRedis]) -> BusSettings:
    for node in cluster:  # each test starts on an empty cluster
        redis.Redis(port=node.port).flushall()
    return load_bus_settings(
        redis_url=cluster[0].url, redis_cluster=True, lease_ms=900, partitions=8,
        retry_backoff_ms=20, max_deliveries=2,
    )  # fmt: skip


@pytest.fixture
async def cluster_client(cluster_settings: BusSettings) -> AsyncIterator[Redis]:
    client = bus_client(cluster_settings)
    yield client
    await client.aclose()


async def answered(client: Redis, settings: BusSettings) -> dict[str, list[PolicyToken]]:
    found = await read_topic(client, POLICY_TOKEN, settings.partitions)
    by_session: dict[str, list[PolicyToken]] = {}
    for token in found:
        if isinstance(token, PolicyToken):
            by_session.setdefault(token.session_id, []).append(token)
    return by_session


async def test_a_conversation_on_three_masters_keeps_each_partition_on_one_node(
    cluster: list[EmbeddedRedis], cluster_settings: BusSettings, cluster_client: Redis
) -> None:
    async with (
        StageRuntime(CountingStage, cluster_settings),
        Producer(cluster_settings, "producer", [CHAT_MESSAGE]) as producer,
    ):
        for seq, session in enumerate(SESSIONS, start=1):
            await producer.publish(viewer_chat(session, seq))

        async def all_answered() -> bool:
            return len(await answered(cluster_client, cluster_settings)) == len(SESSIONS)

        await wait_until(all_answered, what="an answer to every session")
        replies = await answered(cluster_client, cluster_settings)

    assert all(len(tokens) == 1 for tokens in replies.values()), "each answered once"
    nodes_of: dict[int, set[int]] = {}
    for index, node in enumerate(cluster):
        for key in redis.Redis(port=node.port).scan_iter(count=1000):
            tag = re.search(rb"\{p(\d+)\}", key)
            if tag is not None:
                nodes_of.setdefault(int(tag.group(1)), set()).add(index)
    assert all(len(nodes) == 1 for nodes in nodes_of.values()), nodes_of
    assert len(set().union(*nodes_of.values())) >= 2, "the partitions spread over the masters"


async def test_replicas_share_the_partitions_and_one_takes_over_when_the_other_stops(
    cluster_settings: BusSettings, cluster_client: Redis
) -> None:
    first = StageRuntime(CountingStage, cluster_settings, replica_id="first")
    second = StageRuntime(CountingStage, cluster_settings, replica_id="second")
    await first.start()
    await second.start()
    try:

        async def shared() -> bool:
            owners = await partition_owners(cluster_client, "counting")
            return set(owners.values()) == {"first", "second"} and len(owners) == 8

        await wait_until(shared, what="both replicas to hold partitions")
        await first.stop()

        async def taken_over() -> bool:
            owners = await partition_owners(cluster_client, "counting")
            return set(owners.values()) == {"second"} and len(owners) == 8

        await wait_until(taken_over, what="the second replica to take every partition")
        async with Producer(cluster_settings, "producer", [CHAT_MESSAGE]) as producer:
            for seq, session in enumerate(SESSIONS, start=1):
                await producer.publish(viewer_chat(session, seq))

        async def all_answered() -> bool:
            return len(await answered(cluster_client, cluster_settings)) == len(SESSIONS)

        await wait_until(all_answered, what="the survivor to answer every session")
    finally:
        await second.stop()


async def test_the_message_of_a_killed_replica_is_finished_once_by_another(
    cluster_settings: BusSettings, cluster_client: Redis, tmp_path: Path
) -> None:
    with echo_workers(cluster_settings, tmp_path) as workers:
        workers.start("victim", "--delay-s", "3")
        async with Producer(cluster_settings, "producer", [CHAT_MESSAGE]) as producer:
            await producer.publish(viewer_chat("s1", 7))

        async def in_hand() -> bool:
            started = await cluster_client.lrange(STARTED_LIST, 0, -1)
            return b"victim s1 7" in started

        await wait_until(in_hand, what="the victim to start on the message")
        workers.start("survivor")
        workers.kill("victim")

        async def finished() -> bool:
            return "s1" in await answered(cluster_client, cluster_settings)

        await wait_until(finished, what="the survivor to finish the message")
        await asyncio.sleep(1.0)  # room for a (wrong) second answer
        replies = await answered(cluster_client, cluster_settings)
    assert [(r.seq, r.text) for r in replies["s1"]] == [(7, "survivor")]


class Refusing(Stage):
    name = "refusing"

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        raise ValueError(f"cannot take {message.text!r}")


async def test_a_failing_message_goes_to_dead_letters_in_another_slot(
    cluster_settings: BusSettings, cluster_client: Redis
) -> None:
    async with (
        StageRuntime(Refusing, cluster_settings),
        Producer(cluster_settings, "producer", [CHAT_MESSAGE]) as producer,
    ):
        await producer.publish(viewer_chat("s2", 1))
        dead = dead_letter_stream(CHAT_MESSAGE.name)

        async def dead_lettered() -> bool:
            return int(await cluster_client.xlen(dead)) == 1

        await wait_until(dead_lettered, what="the message in dead letters")
        stream = stream_for(CHAT_MESSAGE, "s2", cluster_settings.partitions)

        async def acknowledged() -> bool:
            pending = await cluster_client.xpending(stream, "refusing")
            return int(pending["pending"]) == 0

        await wait_until(acknowledged, what="the partition stream to let it go")
    (entry,) = await cluster_client.xrange(dead)
    assert b"cannot take" in entry[1][b"reason"]
    listed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services", "dlq", "list", "--json"],
        env=worker_env(cluster_settings), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (letter,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert "cannot take" in letter["reason"], "`marionette dlq list` reads the cluster"


async def test_the_gateways_tail_follows_partitions_on_every_master(
    cluster_settings: BusSettings, cluster_client: Redis
) -> None:
    tail = StreamTail(cluster_client, cluster_settings.partitions, 1 << 20)
    seen: list[str] = []

    async def watch() -> None:
        async for event in tail.follow([POLICY_TOKEN], block_ms=200):
            seen.append(event.message.session_id)

    watching = asyncio.create_task(watch())
    await asyncio.sleep(0.5)  # the watcher is reading "from now"
    try:
        async with Producer(cluster_settings, "producer", [POLICY_TOKEN]) as producer:
            for n, session in enumerate(SESSIONS):
                await producer.publish(
                    PolicyToken(session_id=session, turn_id="t1", seq=n, index=0, text="hi")
                )

        async def all_seen() -> bool:
            return sorted(seen) == sorted(SESSIONS)

        await wait_until(all_seen, what="the tail to see every session's token")
    finally:
        watching.cancel()
