"""The `marionette` command as a user runs it."""

import asyncio
import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis.asyncio import Redis

from contracts import AudioFrame, ChatMessage, PolicyToken
from contracts.topics import AUDIO_FRAME, CHAT_MESSAGE, POLICY_TOKEN
from services.bus import BusSettings, Publishes, Stage, StageRuntime, consumes
from services.bus.partitions import stream_for
from services.bus.redis_server import free_port
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


def test_the_marionette_command_is_the_cli_app_and_lists_its_commands() -> None:
    [script] = [e for e in entry_points(group="console_scripts") if e.name == "marionette"]
    assert script.value == "services.cli.app:app"
    helped = subprocess.run(
        [str(Path(sys.executable).parent / "marionette"), "--help"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    listed = set(re.findall(r"^│ (\w+) ", helped.stdout, flags=re.MULTILINE))
    assert {"run", "up", "chat", "dlq", "record", "replay", "bench"} <= listed, helped.stdout


class Listener(Stage):
    name = "listener"

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        pass


async def test_dlq_list_and_redrive(
    bus_settings: BusSettings, redis_client: Redis, redis_url: str
) -> None:
    stream = stream_for(CHAT_MESSAGE, "s1", bus_settings.partitions)
    async with StageRuntime(Listener, bus_settings):
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


def up(tmp_path: Path, *args: str) -> str:
    """`marionette up ARGS` with no REDIS_URL and no microphone; its output."""
    env = {k: v for k, v in os.environ.items() if "REDIS_URL" not in k and "CAPTURE" not in k}
    result = subprocess.run(
        [sys.executable, "-m", "services", "up", *args],
        capture_output=True, text=True, timeout=150, cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not (tmp_path / ".marionette" / "redis.url").exists(), "cleaned up on exit"
    return output


def test_up_runs_on_embedded_defaults(tmp_path: Path) -> None:
    """No REDIS_URL, no microphone: embedded Redis, the bundled sample, the bundled model.
    The sample starts once asr is ready, so the time to load every model comes first."""
    output = up(tmp_path, "--duration", "50")
    if "playing the bundled sample conversation" in output:  # else a microphone was found
        assert "Hello Marionette, how are you today?" in output, "the sample was heard"
        assert "What is the capital of France?" in output, "all of it"
        assert output.count("final ok:") >= 2, "both questions were answered"
    assert "ready to talk" in output


def test_up_demo_says_hello_in_chat_once_policy_is_ready(tmp_path: Path) -> None:
    output = up(tmp_path, "--duration", "40", "--demo", "--skip", "capture")
    demo_line = re.search(r"chat\.message +(\S+)/(cli-\w+) #0 cli:you: hi Marionette!", output)
    assert demo_line, "the monitor printed the demo chat line"
    assert output.index("stage policy running") < demo_line.start(), "sent once policy was up"
    session, turn = demo_line.groups()
    assert re.search(rf"policy\.token +{session}/{turn} #\d+ final ok:", output), "answered"


class PolicyStandIn(Stage):
    """Answers every chat line at once, as policy would (its final token)."""

    name = "policy"
    replies = Publishes(POLICY_TOKEN)

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, chat: ChatMessage) -> None:
        await self.replies.publish(
            PolicyToken(
                session_id=chat.session_id, turn_id=chat.turn_id, seq=0, index=0, text="",
                final=True, reply_text=f"you said {chat.text}", status="ok",
            )
        )  # fmt: skip


async def test_chat_says_a_line_and_prints_the_reply(
    bus_settings: BusSettings, redis_client: Redis, redis_url: str
) -> None:
    env = {"REDIS_URL": redis_url, "MARIONETTE_PARTITIONS": str(bus_settings.partitions)}
    async with StageRuntime(PolicyStandIn, bus_settings):
        said = await asyncio.to_thread(
            marionette, "chat", "hello there", "--session", "viewer-7", "--wait", "30", env=env
        )
    assert said.returncode == 0, said.stderr
    assert "you said hello there (ok)" in said.stdout
    [line] = await read_topic(redis_client, CHAT_MESSAGE, bus_settings.partitions)
    assert isinstance(line, ChatMessage)
    assert (line.session_id, line.text, line.platform) == ("viewer-7", "hello there", "cli")

    unanswered = await asyncio.to_thread(marionette, "chat", "anyone?", "--wait", "1", env=env)
    assert unanswered.returncode == 2
    assert "no reply within 1 s" in unanswered.stderr


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
    # 50 frames of audio, then a silent one that marks the end of the input (the audio
    # ended on a frame boundary: nothing was left to carry the mark).
    assert b"published 51 frames" in result.stdout
    frames = [
        f
        for f in await read_topic(redis_client, AUDIO_FRAME, bus_settings.partitions)
        if isinstance(f, AudioFrame)
    ]
    assert [f.seq for f in frames] == list(range(51))
    assert b"".join(f.pcm for f in frames[:50]) == pcm
    assert frames[50].pcm == bytes(640)
    assert [f.end_of_input for f in frames] == [False] * 50 + [True]
    assert len({f.origin for f in frames}) == 1, "one capture run"
    assert {f.turn_id for f in frames} == {None}, "frames belong to no turn"


def test_up_with_the_gateway_alone_serves_its_api(tmp_path: Path) -> None:
    """`marionette up --stage gateway`: it needs nothing but Redis, and says where it is."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if "REDIS_URL" not in k}
    process = subprocess.Popen(
        [sys.executable, "-m", "services", "up", "--stage", "gateway", "--no-spares",
         "--metrics-port", "0", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**env, "COLUMNS": "200", "MARIONETTE_GATEWAY_PORT": str(port)},
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "stage gateway running" in line:
                break
        url = f"http://127.0.0.1:{port}"
        assert any(f"gateway: {url}/" in line for line in lines), "".join(lines)
        status = httpx.get(f"{url}/api/status", timeout=10)
        assert status.status_code == 200
        assert status.json()["stages"]["gateway"]["replicas"][0]["alive"]
    finally:
        process.terminate()
        process.wait(timeout=30)
