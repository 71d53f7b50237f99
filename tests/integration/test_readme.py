"""The README's worked example of a new consumer runs as printed."""

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contracts import PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import BusSettings, Stage, StageRuntime
from tests.helpers import viewer_chat
from tests.integration.workers import REPO_ROOT, worker_env

pytestmark = pytest.mark.integration


def readme_example(name: str) -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    match = re.search(rf"```python\n# {re.escape(name)}\n(.*?)```", readme, re.DOTALL)
    assert match, f"README has no python block starting with '# {name}'"
    return match.group(1)


def start_script(script: Path, settings: BusSettings, output: Path) -> "subprocess.Popen[bytes]":
    with output.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(script)],
            cwd=REPO_ROOT, env={**worker_env(settings), "PYTHONUNBUFFERED": "1"},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def test_the_captions_example_prints_chat_and_replies(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    script = tmp_path / "captions.py"
    script.write_text(readme_example("captions.py"))
    output = tmp_path / "captions.out"
    process = start_script(script, bus_settings, output)
    try:
        stage = Stage("viewer")
        chats = stage.publisher(CHAT_MESSAGE)
        tokens = stage.publisher(POLICY_TOKEN)
        async with StageRuntime(stage, bus_settings):
            await chats.publish(viewer_chat("show", 0))
            await tokens.publish(
                PolicyToken(
                    session_id="show", turn_id="t0", seq=0, text="", index=0, final=True,
                    reply_text="Hello, chat!", status="ok",
                )
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while "Hello, chat!" not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            await asyncio.sleep(0.1)
        printed = output.read_text()
        assert "[show] Hello, chat!" in printed
        assert "[show] show: message 0" in printed
    finally:
        process.terminate()
        process.wait(timeout=15)
