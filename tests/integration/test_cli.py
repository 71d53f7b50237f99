"""The `marionette` command as a user runs it."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from redis.asyncio import Redis

from contracts import AudioFrame
from contracts.topics import AUDIO_FRAME, CHAT_MESSAGE
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.partitions import stream_for
from tests.helpers import read_topic, wait_until

pytestmark = pytest.mark.integration


def marionette(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )  # fmt: skip


async def test_dlq_list_and_redrive(
    bus_settings: BusSettings, redis_client: Redis, redis_url: str
) -> None:
    stage = Stage("listener")
    handled: list[str] = []

    @stage.consumer(CHAT_MESSAGE)
    async def on_chat(msg: object) -> None:
        handled.append("x")

    stream = stream_for(CHAT_MESSAGE, "s1", bus_settings.partitions)  # type: ignore[arg-type]
    async with StageRuntime(stage, bus_settings):
        await redis_client.xadd(stream, {"text": "no envelope"})

        async def dead_lettered() -> bool:
            return await redis_client.xlen("dlq.chat.message") == 1

        await wait_until(dead_lettered, what="a dead letter")

    listed = marionette("dlq", "list", "--json", env={"REDIS_URL": redis_url})
    assert listed.returncode == 0, listed.stderr
    letter = json.loads(listed.stdout)
    assert letter["topic"] == "chat.message"
    assert "no __data__ field" in letter["reason"]
    assert letter["group"] == "listener"

    table = marionette("dlq", "list", env={"REDIS_URL": redis_url})
    assert "no __data__ field" in table.stdout

    redriven = marionette("dlq", "redrive", "chat.message", env={"REDIS_URL": redis_url})
    assert redriven.returncode == 0, redriven.stderr
    assert "re-drove 1" in redriven.stdout
    assert await redis_client.xlen("dlq.chat.message") == 0
    assert await redis_client.xlen(stream) == 2  # the original, and the re-driven copy


def test_dlq_list_without_redis_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "REDIS_URL" not in k}
    result = subprocess.run(
        [sys.executable, "-m", "services", "dlq", "list"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "set REDIS_URL" in result.stderr


def test_bad_setting_names_the_variable() -> None:
    result = marionette("run", "monitor", env={"MARIONETTE_PARTITIONS": "0"})
    assert result.returncode == 2
    assert "MARIONETTE_PARTITIONS" in result.stderr
    assert "greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_stage_lists_the_known_ones() -> None:
    result = marionette("run", "nosuch")
    assert result.returncode == 2
    assert "monitor" in result.stderr


def test_up_runs_on_embedded_defaults(tmp_path: Path) -> None:
    """No REDIS_URL, no microphone: embedded Redis, the bundled sample, the bundled model."""
    env = {k: v for k, v in os.environ.items() if "REDIS_URL" not in k and "CAPTURE" not in k}
    result = subprocess.run(
        [sys.executable, "-m", "services", "up", "--duration", "30", "--demo"],
        capture_output=True, text=True, timeout=150, cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    if "playing the bundled sample conversation" in output:
        assert "What is the capital of France?" in output, "the sample was heard"
        assert output.count("final ok:") >= 3, "the demo line and both questions were answered"
    assert "hi marionette!" in output, "the monitor printed the demo chat line"
    assert "final ok: 'Hello there, chat!'" in output
    assert "dead letters" in output, "the malformed demo entry was dead-lettered"
    assert not (tmp_path / ".marionette" / "redis.url").exists(), "cleaned up on exit"


async def test_capture_reads_raw_pcm_from_stdin(
    redis_url: str, redis_client: Redis, bus_settings: BusSettings
) -> None:
    pcm = (np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 300) * 8000).astype("<i2").tobytes()
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services", "capture", "-i", "-", "--fast", "--session", "piped"],
        input=pcm, capture_output=True, timeout=60,
        env={**os.environ, "REDIS_URL": redis_url, "MARIONETTE_PARTITIONS": "4"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert b"published 50 frames" in result.stdout
    frames = await read_topic(redis_client, AUDIO_FRAME, bus_settings.partitions)
    assert [f.seq for f in frames] == list(range(50))
    assert b"".join(f.pcm for f in frames if isinstance(f, AudioFrame)) == pcm
