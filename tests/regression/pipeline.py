"""The stages that answer a replay: `marionette up` with repeatable models, run as a user would.

Both the committed recordings (make_recordings.py) and the regression tests use these
settings, so a replay meets the same persona, reply length and voice as the recording.
"""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis.asyncio import Redis

from contracts.topics import AUDIO_FRAME, CHAT_MESSAGE, POLICY_TOKEN
from services.bus import BusSettings
from services.replay.pacing import group_live
from tests.e2e.sample_run import Pipeline
from tests.integration.workers import REPO_ROOT

RECORDINGS = Path(__file__).resolve().parent / "recordings"
REPLAY_STAGES = ("asr", "policy", "tts")
"""What the recordings' comparisons need: transcripts, replies, their audio."""
RECORDED_TOPICS = (
    "audio.frame", "chat.message", "asr.speech", "asr.final", "policy.token", "tts.chunk",
)  # fmt: skip
"""No avatar or playback: the diff does not look at them, and the files stay small."""
REPEATABLE_ENV = {
    "MARIONETTE_POLICY_TEMPERATURE": "0",
    "MARIONETTE_POLICY_SEED": "7",
    "MARIONETTE_POLICY_MAX_TOKENS": "24",
    "MARIONETTE_TTS_VARIATION": "0",
    "MARIONETTE_TELEMETRY_TRACES": "off",
}
READY_TIMEOUT_S = 120.0
CONSUMERS = {AUDIO_FRAME: "asr", CHAT_MESSAGE: "policy", POLICY_TOKEN: "tts"}


def marionette_env(bus: BusSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MARIONETTE_CONFIG"}
    return {
        **env,
        **REPEATABLE_ENV,
        "REDIS_URL": bus.redis_url or "",
        "MARIONETTE_PARTITIONS": str(bus.partitions),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }


def marionette(args: list[str], bus: BusSettings, log_path: Path) -> "subprocess.Popen[bytes]":
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services", *args],
            cwd=REPO_ROOT,
            env=marionette_env(bus),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def wait_until_listening(bus: BusSettings, pipeline: Pipeline) -> None:
    """Until asr, policy and tts read every partition of their input."""
    client = Redis.from_url(bus.redis_url or "")
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            ready = [
                await group_live(client, topic, group, bus.partitions)
                for topic, group in CONSUMERS.items()
            ]
            if all(ready):
                return
            if pipeline.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the stages did not start\n{pipeline.log_tail()}")
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


@contextmanager
def replay_stages(bus: BusSettings, folder: Path) -> Iterator[Pipeline]:
    """asr, policy and tts under `marionette up`, listening, stopped afterwards."""
    args = ["up", "--metrics-port", "0", *(a for s in REPLAY_STAGES for a in ("--stage", s))]
    log_path = folder / "up.log"
    pipeline = Pipeline(marionette(args, bus, log_path), log_path, folder, bus)
    try:
        asyncio.run(wait_until_listening(bus, pipeline))
        yield pipeline
    finally:
        pipeline.stop()
        pipeline.kill()
