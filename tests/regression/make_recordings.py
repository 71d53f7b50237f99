"""Makes the recordings the regression tests replay: `python -m tests.regression.make_recordings`.

Runs asr, policy and tts under `marionette up` on an embedded Redis with the repeatable
settings of pipeline.py, and records, with `marionette record`:
- voice.mrec: the bundled sample conversation (two questions) played in real time;
- chat.mrec: two chat lines of one viewer.
Make them again when the contracts' schema version changes, or a model or the prompt is
changed on purpose.
"""

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contracts import ChatMessage
from contracts.topics import CHAT_MESSAGE
from services.bus import BusSettings, Producer, load_bus_settings
from services.bus.redis_server import EmbeddedRedis
from services.capture.stage import SAMPLE_CONVERSATION
from tests.regression.pipeline import RECORDED_TOPICS, RECORDINGS, marionette, replay_stages

CHAT_LINES = ("Hi Marionette! What is your favourite colour?", "Why do you like it?")
RECORD_TIMEOUT_S = 300


def start_recording(name: str, bus: BusSettings, folder: Path) -> "subprocess.Popen[bytes]":
    topics = [a for t in RECORDED_TOPICS for a in ("--topic", t)]
    path = RECORDINGS / name
    path.unlink(missing_ok=True)
    log = folder / f"{name}.log"
    process = marionette(["record", str(path), *topics, "--turns", "2"], bus, log)
    while "recording" not in log.read_text():  # said once it has taken the streams' ends
        time.sleep(0.1)
    return process


def finish_recording(process: "subprocess.Popen[bytes]", name: str, folder: Path) -> None:
    process.wait(timeout=RECORD_TIMEOUT_S)
    print((folder / f"{name}.log").read_text())


async def say_in_chat(bus: BusSettings) -> None:
    async with Producer(bus, "viewer", [CHAT_MESSAGE]) as chats:
        for seq, line in enumerate(CHAT_LINES):
            await chats.publish(
                ChatMessage(
                    session_id="rec-chat", turn_id=f"chat{seq}", seq=0,
                    platform="twitch", author="viewer", text=line,
                )
            )  # fmt: skip
            await asyncio.sleep(8)  # the first reply is spoken before the next line


def main() -> None:
    RECORDINGS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis() as redis_server:
        folder = Path(tmp)
        bus = load_bus_settings(redis_url=redis_server.url)
        with replay_stages(bus, folder):
            recorder = start_recording("voice.mrec", bus, folder)
            capture = marionette(
                ["capture", "--input", str(SAMPLE_CONVERSATION), "--session", "rec-voice"],
                bus,
                folder / "capture.log",
            )
            capture.wait(timeout=60)
            finish_recording(recorder, "voice.mrec", folder)

            recorder = start_recording("chat.mrec", bus, folder)
            asyncio.run(say_in_chat(bus))
            finish_recording(recorder, "chat.mrec", folder)
    for name in ("voice.mrec", "chat.mrec"):
        listing = [sys.executable, "-m", "services", "replay", str(RECORDINGS / name), "--list"]
        subprocess.run(listing, check=True)


if __name__ == "__main__":
    main()
