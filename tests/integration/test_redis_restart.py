"""Redis killed and restarted mid-stream: stages recover by themselves, nothing acked is lost."""

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import Producer, load_bus_settings
from services.bus.redis_server import EmbeddedRedis
from tests.helpers import partition_owners, read_topic, viewer_chat, wait_until
from tests.integration.workers import echo_workers

pytestmark = pytest.mark.integration


async def test_consumers_recover_from_a_redis_restart_without_losing_messages(
    restartable_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = load_bus_settings(redis_url=restartable_redis.url, lease_ms=900, partitions=4)
    sessions, per_session, restart_at, outage_s = ["a", "b", "c"], 80, 30, 1.5
    published: set[tuple[str, int]] = set()
    client: Redis = Redis.from_url(restartable_redis.url)

    run_id_before = (await client.info("server"))["run_id"]
    back_at = 0.0

    async def outage() -> None:
        nonlocal back_at
        # SIGKILL: no shutdown save; only the fsynced append-only file survives.
        await asyncio.to_thread(restartable_redis.stop, True)
        await asyncio.sleep(outage_s)
        await asyncio.to_thread(restartable_redis.start)
        back_at = time.monotonic()

    with echo_workers(settings, tmp_path) as workers:
        worker = workers.start("worker")

        async def serving() -> bool:
            return len(await partition_owners(client, "echo")) == settings.partitions

        await wait_until(serving, what="the stage to hold its partitions")  # then the outage
        async with Producer(settings, "producer", [CHAT_MESSAGE]) as producer:
            for seq in range(per_session):
                if seq == restart_at:
                    restart = asyncio.create_task(outage())
                for session in sessions:
                    await producer.publish(viewer_chat(session, seq))
                    published.add((session, seq))
                await asyncio.sleep(0.01)

        async def all_answered() -> bool:
            replies = await read_topic(client, POLICY_TOKEN, settings.partitions)
            return {(r.session_id, r.seq) for r in replies} >= published

        await restart
        await wait_until(all_answered, timeout_s=30, what="every published message answered")
        caught_up_s = time.monotonic() - back_at
        assert worker.poll() is None, "the stage process kept running through the restart"
        replies = await read_topic(client, POLICY_TOKEN, settings.partitions)
        log = workers.log("worker")
        assert (await client.info("server"))["run_id"] != run_id_before, "Redis did restart"
    await client.aclose()

    print(f"{len(published)} messages answered; caught up {caught_up_s:.2f} s after Redis was back")
    for session in sessions:
        seqs = [r.seq for r in replies if r.session_id == session]
        assert sorted(set(seqs)) == list(range(per_session)), f"{session} lost messages"
        assert seqs == sorted(seqs), f"{session} answered out of order"
    assert "Redis is back" in log, "the stage noticed the outage and recovered"
