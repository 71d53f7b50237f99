"""`marionette record` and `marionette replay` as a user runs them."""

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from faststream.redis.parser.binary import BinaryMessageFormatV1

from contracts import ChatMessage, PolicyToken, TtsChunk
from contracts.envelope import Envelope
from contracts.limits import SCHEMA_VERSION
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN, TTS_CHUNK
from services.bus import BusSettings, Producer
from services.bus.partitions import partition_stream
from services.bus.wire import StreamEntry, decode_entry
from services.replay.recording import Record, Recording, RecordingHeader, RecordingWriter
from tests.helpers import wait_until
from tests.integration.test_cli import marionette
from tests.integration.workers import REPO_ROOT
from tests.regression.pipeline import RECORDINGS

pytestmark = pytest.mark.integration


def test_replay_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    done = marionette("replay", str(tmp_path / "nowhere.mrec"))
    assert done.returncode == 2
    assert "cannot read" in done.stderr
    assert "nowhere.mrec" in done.stderr


def test_replay_refuses_a_recording_of_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.mrec"
    header = {
        **RecordingHeader(("chat.message",), 1).packed(),
        "schema_version": SCHEMA_VERSION + 1,
    }
    path.write_bytes(gzip.compress(msgpack.packb(header)))
    done = marionette("replay", str(path), "--list")
    assert done.returncode == 2
    assert f"schema version {SCHEMA_VERSION + 1}" in done.stderr
    assert "upgrade Marionette" in done.stderr


def test_replay_lists_what_a_recording_holds() -> None:
    done = marionette("replay", str(RECORDINGS / "chat.mrec"), "--list", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert listing["schema_version"] == SCHEMA_VERSION
    assert listing["per_topic"]["chat.message"] == 2
    assert [t["heard"] for t in listing["turns"]] == [
        "Hi Marionette! What is your favourite colour?",
        "Why do you like it?",
    ]
    assert all(t["reply"] and t["chunks"] >= 1 and t["finished"] for t in listing["turns"])


async def body_entry(message: Envelope, schema_version: int) -> dict[bytes, bytes]:
    """An entry as a producer of contracts `schema_version` wrote it (no message_id then)."""
    body = message.model_dump(mode="json", exclude={"message_id"})
    body["schema_version"] = schema_version
    data = await BinaryMessageFormatV1.encode(
        message=json.dumps(body).encode(), reply_to=None,
        headers={"content-type": "application/json"}, correlation_id="old",
    )  # fmt: skip
    return {b"__data__": data}


async def test_replay_reads_a_recording_of_older_contracts_through_the_migrations(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.mrec"
    topics = ("chat.message", "policy.token", "tts.chunk")
    writer = RecordingWriter(path, RecordingHeader(topics, 1, schema_version=1))
    old = [
        ChatMessage(
            session_id="s", turn_id="t1", seq=0, platform="twitch", author="a", text="Hi there"
        ),
        PolicyToken(
            session_id="s", turn_id="t1", seq=0, index=0, text="Hello!", final=True,
            reply_text="Hello!", status="ok",
        ),
        TtsChunk(
            session_id="s", turn_id="t1", seq=0, index=0, final=True, text="Hello!",
            sample_rate=22050, pcm=b"\0\0" * 2205,
        ),
    ]  # fmt: skip
    for n, message in enumerate(old):
        stream = partition_stream(topics[n], 0)
        writer.write(
            Record(stream, f"{1_700_000_000_000 + n * 100}-0", await body_entry(message, 1))
        )
    writer.close()

    done = marionette("replay", str(path), "--list", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert listing["schema_version"] == 1, "listed as recorded"
    [turn] = listing["turns"]
    assert (turn["heard"], turn["reply"], turn["chunks"], turn["finished"]) == (
        "Hi there", "Hello!", 1, True,
    )  # fmt: skip
    records = list(Recording(path).records())
    assert [
        decode_entry(
            StreamEntry(r.stream, r.entry_id.encode(), r.fields), topic, 10**6
        ).envelope.message_id
        for r, topic in zip(records, (CHAT_MESSAGE, POLICY_TOKEN, TTS_CHUNK), strict=True)
    ] == ["t1:0", "t1:0", "t1:0"], "read as this build's contracts, identity and all"


def test_record_names_the_topics_it_knows(bus_settings: BusSettings) -> None:
    done = marionette(
        "record", "--topic", "audio.frames", env={"REDIS_URL": bus_settings.redis_url or ""}
    )
    assert done.returncode == 2
    assert "unknown topic 'audio.frames'" in done.stderr
    assert "audio.frame" in done.stderr


def test_record_without_a_redis_says_how_to_get_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "services", "record"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no Redis to talk to" in done.stderr


async def test_record_stops_after_the_turns_asked_for_and_on_ctrl_c(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": bus_settings.redis_url or "", "MARIONETTE_PARTITIONS": "4"}
    command = [sys.executable, "-m", "services", "record"]
    by_turns = tmp_path / "turns.mrec"
    until_ctrl_c = tmp_path / "ctrl-c.mrec"
    topics = ["--topic", "chat.message,policy.token"]
    logs = [tmp_path / "turns.log", tmp_path / "ctrl-c.log"]
    recorders = []
    for path, log, extra in ((by_turns, logs[0], ["--turns", "1"]), (until_ctrl_c, logs[1], [])):
        with log.open("wb") as err:
            recorders.append(
                await asyncio.create_subprocess_exec(
                    *command,
                    str(path),
                    *topics,
                    *extra,
                    env=env,
                    cwd=REPO_ROOT,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=err,
                )
            )

    async def both_recording() -> bool:
        return all(log.exists() and "recording" in log.read_text() for log in logs)

    await wait_until(both_recording, what="the recorders to take the streams' ends")
    async with Producer(bus_settings, "viewer", [CHAT_MESSAGE, POLICY_TOKEN]) as viewer:
        for turn in ("t1", "t2"):
            await viewer.publish(
                ChatMessage(
                    session_id="s", turn_id=turn, seq=0, platform="cli", author="a", text="hi"
                )
            )
            await viewer.publish(
                PolicyToken(
                    session_id="s", turn_id=turn, seq=0, index=0, text="Hello", final=True,
                    reply_text="Hello", status="ok",
                )
            )  # fmt: skip
            await asyncio.sleep(2.0)  # the first recorder stops between the turns
    by_turns_out, _ = await asyncio.wait_for(recorders[0].communicate(), 30)
    recorders[1].send_signal(signal.SIGINT)
    ctrl_c_out, _ = await asyncio.wait_for(recorders[1].communicate(), 30)
    assert recorders[0].returncode == 0
    assert recorders[1].returncode == 0
    assert b"1 turns finished" in by_turns_out
    assert len(list(Recording(by_turns).records())) == 2, "the first turn only"
    assert len(list(Recording(until_ctrl_c).records())) == 4
    assert b"4 messages, 2 turns finished" in ctrl_c_out
