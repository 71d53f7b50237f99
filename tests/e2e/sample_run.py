"""One run of `marionette up` on the bundled sample, watched from outside.

capture plays the sample conversation (two questions) into the real stages, each its own
process with the real models, on the test Redis; the run ends once both questions were
answered, spoken and played, and `up` was stopped as Ctrl-C would. What the stages
published (read back from the streams), their log, the WAV files and the stored spans
are what the end-to-end tests check.
"""

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from contracts import (
    AsrFinal,
    AsrPartial,
    AudioFrame,
    AvatarExpr,
    Envelope,
    PlaybackProgress,
    PolicyToken,
    SpeechEvent,
    Topic,
    TtsChunk,
)
from contracts.topics import (
    ASR_FINAL,
    ASR_PARTIAL,
    ASR_SPEECH,
    AUDIO_FRAME,
    AVATAR_EXPR,
    PLAYBACK_PROGRESS,
    POLICY_TOKEN,
    TTS_CHUNK,
)
from services.bus import BusSettings, load_bus_settings
from services.capture.stage import SAMPLE_CONVERSATION
from tests.helpers import read_topic
from tests.integration.workers import start_marionette

NAME = "Marionette"
SAMPLE_LINES = (f"Hello {NAME}, how are you today?", "What is the capital of France?")
"""What the bundled sample says (scripts/make_sample_audio.py), in order."""
SESSION = "e2e"
DONE_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
"""`up` gives the stages 15 s to finish before it kills them; the rest is for a busy machine."""
LOG_TAIL_CHARS = 8000

M = TypeVar("M", bound=Envelope)


def pipeline_env(wav_dir: Path, trace_dir: Path) -> dict[str, str]:
    return {
        "MARIONETTE_TELEMETRY_TRACE_DIR": str(trace_dir),
        # An explicit input: the test must not depend on whether a microphone is found.
        "MARIONETTE_CAPTURE_INPUT": str(SAMPLE_CONVERSATION),
        "MARIONETTE_CAPTURE_REALTIME": "true",
        "MARIONETTE_CAPTURE_SESSION_ID": SESSION,
        # Repeatable replies and voice, so a failure can be reproduced.
        "MARIONETTE_POLICY_TEMPERATURE": "0",
        "MARIONETTE_POLICY_SEED": "7",
        "MARIONETTE_POLICY_MAX_TOKENS": "40",
        "MARIONETTE_TTS_VARIATION": "0",
        "MARIONETTE_PLAYBACK_OUTPUT": "wav",
        "MARIONETTE_PLAYBACK_WAV_DIR": str(wav_dir),
        "COLUMNS": "200",  # rich wraps log lines at 80 columns without a terminal
    }


def stage_pids(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc; empty elsewhere)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def still_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class Pipeline:
    process: "subprocess.Popen[bytes]"
    log_path: Path
    wav_dir: Path
    bus: BusSettings

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return f"--- last of {self.log_path} ---\n{text[-LOG_TAIL_CHARS:]}"

    def stop(self) -> tuple[int | None, list[int]]:
        """SIGINT, as Ctrl-C would; returns the exit code (None: hung) and stages left running."""
        stages = stage_pids(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code: int | None = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        deadline = time.monotonic() + 5
        while any(still_running(p) for p in stages) and time.monotonic() < deadline:
            time.sleep(0.1)
        return code, [p for p in stages if still_running(p)]

    def kill(self) -> None:
        stages = stage_pids(self.process.pid)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for pid in stages:
            if still_running(pid):
                os.kill(pid, signal.SIGKILL)


async def messages(client: Redis, topic: Topic[M], partitions: int) -> list[M]:
    found = await read_topic(client, topic, partitions)
    typed = [m for m in found if isinstance(m, topic.model)]
    assert len(typed) == len(found), f"{topic.name} holds messages of another type"
    return typed


@dataclass
class Seen:
    """What the stages published, read back from the streams."""

    frames: list[AudioFrame]
    speech: list[SpeechEvent]
    partials: list[AsrPartial]
    finals: list[AsrFinal]
    tokens: list[PolicyToken]
    chunks: list[TtsChunk]
    exprs: list[AvatarExpr]
    progress: list[PlaybackProgress]

    @classmethod
    async def read(cls, client: Redis, partitions: int, audio: bool = True) -> "Seen":
        # Frames and chunks are the bulk of the data: leave them out while polling.
        return cls(
            frames=await messages(client, AUDIO_FRAME, partitions) if audio else [],
            speech=await messages(client, ASR_SPEECH, partitions),
            partials=await messages(client, ASR_PARTIAL, partitions),
            finals=sorted(
                await messages(client, ASR_FINAL, partitions), key=lambda f: f.speech_start_s
            ),
            tokens=await messages(client, POLICY_TOKEN, partitions),
            chunks=await messages(client, TTS_CHUNK, partitions) if audio else [],
            exprs=await messages(client, AVATAR_EXPR, partitions),
            progress=await messages(client, PLAYBACK_PROGRESS, partitions),
        )

    def turn_ids(self) -> list[str]:
        return [f.turn_id or "" for f in self.finals]

    def replied_to(self, turn: str) -> bool:
        return (
            any(t.turn_id == turn and t.final for t in self.tokens)
            and any(p.turn_id == turn and p.state == "finished" for p in self.progress)
            and any(e.turn_id == turn and e.state == "idle" for e in self.exprs)
        )

    def done(self) -> bool:
        return len(self.finals) >= len(SAMPLE_LINES) and all(map(self.replied_to, self.turn_ids()))

    def summary(self) -> str:
        lines = [f"asr.final: {[(f.turn_id, f.text) for f in self.finals]}"]
        for turn in self.turn_ids():
            final = [t for t in self.tokens if t.turn_id == turn and t.final]
            lines.append(
                f"{turn}: {sum(t.turn_id == turn for t in self.tokens)} tokens, "
                f"final {[(t.status, t.reply_text) for t in final]}, "
                f"progress {[p.state for p in self.progress if p.turn_id == turn]}, "
                f"avatar {[e.state for e in self.exprs if e.turn_id == turn]}"
            )
        return "\n".join(lines)


def of_turn(items: list[M], turn: str) -> list[M]:
    return [m for m in items if m.turn_id == turn]


async def wait_for_both_replies(pipeline: Pipeline, client: Redis) -> None:
    """Until each sample line is answered, spoken and played, or the pipeline gives up."""
    deadline = time.monotonic() + DONE_TIMEOUT_S
    seen = await Seen.read(client, pipeline.bus.partitions, audio=False)
    while not seen.done():
        code = pipeline.process.poll()
        if code is not None:
            pytest.fail(
                f"`marionette up` exited early with {code}\n{seen.summary()}\n{pipeline.log_tail()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"not both turns answered, spoken and played in {DONE_TIMEOUT_S:.0f} s\n"
                f"{seen.summary()}\n{pipeline.log_tail()}"
            )
        # Seconds, not milliseconds: every poll reads whole streams on a busy machine.
        await asyncio.sleep(1.0)
        seen = await Seen.read(client, pipeline.bus.partitions, audio=False)


@dataclass
class SampleRun:
    """What one run of `marionette up` on the sample left behind, once stopped."""

    seen: Seen
    exit_code: int | None  # None: it did not stop
    left_running: list[int]
    log: str
    answered_s: float
    wav_dir: Path
    trace_dir: Path
    recording: Path | None = None  # what `marionette record` made of the run
    recorder_exit: int | None = None


def start_recorder(bus: BusSettings, folder: Path) -> "subprocess.Popen[bytes]":
    """`marionette record` of every topic, taking the streams' ends before `up` starts."""
    log_path = folder / "record.log"
    process = start_marionette(["record", str(folder / "run.mrec")], bus, log_path)
    deadline = time.monotonic() + 60
    while "recording" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"`marionette record` did not start:\n{log_path.read_text()}")
        time.sleep(0.1)  # it says so once it has taken the streams' ends
    return process


def stop_recorder(process: "subprocess.Popen[bytes]") -> int | None:
    """Ctrl-C, as a user stops it; its exit code (None: it hung and was killed)."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return None


async def run_to_the_end(pipeline: Pipeline, trace_dir: Path) -> SampleRun:
    client: Redis = Redis.from_url(pipeline.bus.redis_url or "")
    try:
        started = time.monotonic()
        await wait_for_both_replies(pipeline, client)
        answered_s = time.monotonic() - started
        seen = await Seen.read(client, pipeline.bus.partitions)
    finally:
        await client.aclose()
    code, left_running = await asyncio.to_thread(pipeline.stop)
    log = pipeline.log_path.read_text(errors="replace")
    return SampleRun(seen, code, left_running, log, answered_s, pipeline.wav_dir, trace_dir)


def start_sample_run(redis_url: str, folder: Path) -> Pipeline:
    """`marionette up --skip monitor` on the sample, its files under folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MARIONETTE_CONFIG", raising=False)  # a developer's own settings
        for name, value in pipeline_env(folder / "playback", folder / "traces").items():
            patch.setenv(name, value)
        # The bus's own defaults, not the test suite's fast ones: with the LLM keeping both
        # cores busy, 400 ms claim and 900 ms lease times would hand work over between
        # stages that are merely slow, and this test is about the pipeline as shipped.
        bus = load_bus_settings(redis_url=redis_url)
        log_path = folder / "up.log"
        process = start_marionette(["up", "--skip", "monitor"], bus, log_path)
    return Pipeline(process, log_path, folder / "playback", bus)
