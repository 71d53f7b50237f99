"""Regression: replay the committed recordings' inputs through today's stages and diff.

asr, policy and tts run under `marionette up` with repeatable settings (temperature 0, a
fixed seed, Piper without variation); `marionette replay --inputs-only --json` publishes
the recorded audio and chat and compares, per turn, what was heard, the reply, its
chunks and audio with the recording. A transcript may differ by a word (WER 0.15) and a
reply a little (word similarity 0.8) before the turn counts as changed.
"""

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from contracts import Control, PersonaChange
from contracts.topics import CONTROL
from services.bus import BusSettings, Producer, load_bus_settings
from services.policy.persona import BUNDLED_PERSONAS, PERSONA_KEY, load_persona_file
from services.replay.recording import Recording
from tests.e2e.sample_run import Pipeline
from tests.helpers import wait_until
from tests.integration.workers import REPO_ROOT
from tests.regression.pipeline import RECORDINGS, marionette_env, replay_stages

pytestmark = pytest.mark.integration

REPLAY_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def bus(redis_server_url: str) -> BusSettings:
    with redis.Redis.from_url(redis_server_url) as client:
        client.flushall()
    return load_bus_settings(redis_url=redis_server_url)


@pytest.fixture(scope="module")
def stages(bus: BusSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with replay_stages(bus, tmp_path_factory.mktemp("replay-stages")) as pipeline:
        yield pipeline


def replay(bus: BusSettings, name: str, *options: str) -> tuple[int, dict[str, Any], str]:
    """`marionette replay RECORDING --inputs-only --json`: exit code, report, stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "services", "replay", str(RECORDINGS / name), "--inputs-only",
         "--json", "--wait", "300", *options],
        cwd=REPO_ROOT, env=marionette_env(bus), capture_output=True, timeout=REPLAY_TIMEOUT_S,
    )  # fmt: skip
    stderr = done.stderr.decode(errors="replace")
    assert done.stdout, f"no report (exit {done.returncode}):\n{stderr}"
    return done.returncode, json.loads(done.stdout), stderr


def verdicts(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {t["turn_id"]: {f["name"]: f["verdict"] for f in t["fields"]} for t in report["turns"]}


def test_the_sample_conversation_is_heard_and_answered_as_recorded(
    bus: BusSettings, stages: Pipeline
) -> None:
    code, report, stderr = replay(bus, "voice.mrec")  # at the recorded pace
    assert code == 0, f"{json.dumps(report, indent=1)}\n{stderr}\n{stages.log_tail()}"
    assert report["ok"]
    assert len(report["turns"]) == 2
    assert {t["status"] for t in report["turns"]} <= {"same", "close"}
    for turn in report["turns"]:
        latency = turn["latency_ms"]["voice_to_voice"]
        assert None not in latency, "both runs are timed"


def test_the_chat_lines_are_answered_as_recorded(bus: BusSettings, stages: Pipeline) -> None:
    code, report, stderr = replay(bus, "chat.mrec", "--fast")
    assert code == 0, f"{json.dumps(report, indent=1)}\n{stderr}\n{stages.log_tail()}"
    assert report["ok"]
    assert len(report["turns"]) == 2
    assert {t["status"] for t in report["turns"]} <= {"same", "close"}


async def change_persona(bus: BusSettings, persona: str) -> None:
    name = load_persona_file(BUNDLED_PERSONAS / f"{persona}.toml").name
    client: Redis = Redis.from_url(bus.redis_url or "")
    try:
        async with Producer(bus, "panel", [CONTROL]) as controls:
            change = PersonaChange(persona=persona)
            # A turn id per persona: a second control of the same ids would be a duplicate.
            control = Control(session_id="panel", turn_id=persona, seq=0, command=change)
            await controls.publish(control)

        async def applied() -> bool:
            stored = await client.get(PERSONA_KEY)
            return stored is not None and json.loads(stored)["name"] == name

        await wait_until(applied, timeout_s=60, what=f"policy to switch to {persona}")
    finally:
        await client.aclose()


def test_a_changed_stage_shows_in_the_diff(bus: BusSettings, stages: Pipeline) -> None:
    asyncio.run(change_persona(bus, "grumpy"))
    try:
        code, report, _ = replay(bus, "chat.mrec", "--fast")
    finally:
        asyncio.run(change_persona(bus, "marionette"))
    assert code == 1, "a changed reply fails the replay"
    assert not report["ok"]
    by_turn = verdicts(report)
    assert all(fields["heard"] == "same" for fields in by_turn.values())
    assert any(fields["reply"] == "changed" for fields in by_turn.values())


def test_the_recordings_are_of_this_schema_version() -> None:
    for path in sorted(Path(RECORDINGS).glob("*.mrec")):
        Recording(path)  # raises, naming the fix, once the contracts move on
