"""The docs' worked example of a new stage runs as printed (docs/integrations.md)."""

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contracts import PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import BusSettings, Producer
from tests.helpers import viewer_chat
from tests.integration.workers import REPO_ROOT, worker_env

pytestmark = pytest.mark.integration


def docs_example(name: str) -> str:
    page = (REPO_ROOT / "docs" / "integrations.md").read_text()
    match = re.search(rf"```python\n# {re.escape(name)}\n(.*?)```", page, re.DOTALL)
    assert match, f"docs/integrations.md has no python block starting with '# {name}'"
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
    script.write_text(docs_example("captions.py"))
    output = tmp_path / "captions.out"
    process = start_script(script, bus_settings, output)
    try:
        async with Producer(bus_settings, "viewer", [CHAT_MESSAGE, POLICY_TOKEN]) as out:
            await out.publish(viewer_chat("show", 0))
            await out.publish(
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


def test_the_readme_stays_short_and_its_links_resolve() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "details belong in docs/"
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
