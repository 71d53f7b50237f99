"""`marionette record` during the sample run, and `marionette replay` of it: exact copies."""

import asyncio
import os
import subprocess
import sys

import pytest
import redis
from redis.asyncio import Redis

from contracts.topics import ALL_TOPICS
from services.bus.partitions import topic_of_stream
from services.replay.recording import Recording
from tests.e2e.sample_run import SampleRun
from tests.integration.workers import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

Streams = dict[str, list[dict[bytes, bytes]]]


async def topic_streams(url: str) -> Streams:
    """Every entry of every non-empty topic stream, in order; not the runtime's own keys."""
    client: Redis = Redis.from_url(url)
    try:
        found: Streams = {}
        for key in sorted(await client.keys("*")):
            name = key.decode()
            if topic_of_stream(name) is None or await client.type(key) != b"stream":
                continue
            entries = [fields for _, fields in await client.xrange(key)]
            if entries:  # consumer groups make empty streams
                found[name] = entries
        return found
    finally:
        await client.aclose()


def test_the_recording_holds_every_message_of_the_run_as_redis_held_it(
    sample_run: SampleRun, redis_server_url: str
) -> None:
    assert sample_run.recorder_exit == 0, "Ctrl-C ends a recording cleanly"
    assert sample_run.recording is not None
    recording = Recording(sample_run.recording)
    assert recording.header.topics == tuple(t.name for t in ALL_TOPICS)
    recorded: Streams = {}
    for record in recording.records():
        recorded.setdefault(record.stream, []).append(record.fields)
    assert not recording.truncated
    assert recorded == asyncio.run(topic_streams(redis_server_url))
    assert sum(len(v) for k, v in recorded.items() if k.startswith("audio.frame.")) > 300, (
        "the sample's frames are in it"
    )


def test_replaying_the_recording_reproduces_the_run_byte_for_byte(
    sample_run: SampleRun, redis_server_url: str
) -> None:
    assert sample_run.recording is not None
    other = redis_server_url.rsplit("/", 1)[0] + "/1"
    with redis.Redis.from_url(other) as client:
        client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARIONETTE_")}
    done = subprocess.run(
        [sys.executable, "-m", "services", "replay", str(sample_run.recording), "--fast"],
        cwd=REPO_ROOT, env={**env, "REDIS_URL": other}, capture_output=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    original = asyncio.run(topic_streams(redis_server_url))
    assert asyncio.run(topic_streams(other)) == original
    assert sum(map(len, original.values())) > 400
