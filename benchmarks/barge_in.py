"""Barge-in latency: from the first speech frame of the interruption to the last frame of
the reply played, through real processes.

    python -m benchmarks.barge_in [--trials N] [--quick]

`marionette up --stage asr --stage playback` runs as a user would (faster-whisper, the
real VAD, WAV playback paced in real time). This script plays the other parts: it
publishes a reply's tts.chunk messages (real Piper audio) as tts would, and a scripted
microphone (services.bench.scripted_mic) sends real-time audio frames as capture would.
Each trial starts a reply, waits a random 0.8 to 2 s into its audio (the first trial 0.8 s,
the hardest: asr has not yet measured how loud the reply's echo is, and gates the user with
its configured floor), and speaks the sample's first question over it. The draws are the
same every run.

barge-in: from the capture time of the first speech frame (the first 20 ms of the question
within 40 dB of its loudest) to playback's `paused` report, which it publishes once the
last block it wrote has played. Split into asr (speech to the pause on `control`) and
playback (control to quiet).
baseline: the same reply paused by a Pause this script publishes itself: the floor that
the bus and playback's block size set, measured in the same run.

Without REDIS_URL it starts an embedded server.
"""

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any, cast

import numpy as np
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from contracts import Control, Interrupt, Pause, PlaybackProgress, TtsChunk
from contracts.topics import AUDIO_FRAME, CONTROL, PLAYBACK_PROGRESS, TTS_CHUNK, Topic
from services.bench.scripted_mic import ScriptedMic
from services.bus import BusSettings, Producer, load_bus_settings
from services.bus.partitions import stream_for, streams_of
from services.bus.redis_server import EmbeddedRedis
from services.bus.wire import StreamEntry, decode_entry
from services.capture.stage import SAMPLE_CONVERSATION
from services.tts.settings import TtsSettings
from services.tts.synthesizer import make_synthesizer

REPO_ROOT = Path(__file__).resolve().parents[1]
SESSION = "bench-barge-in"
REPLY = (
    "Once upon a time, a small dragon lived at the top of a very tall mountain.",
    "Every morning she practised breathing fire at the clouds, and every morning she missed.",
)
RATE = 16_000
PUBLISHES: list[Topic[Any]] = [AUDIO_FRAME, TTS_CHUNK, CONTROL]
"""What this script publishes, as capture, tts and a control panel would."""
READY_TO_TALK = "ready to talk"
"""What `marionette up` prints once every stage and spare is loaded and warmed up."""
EARLIEST_S, LATEST_S = 0.8, 2.0
"""How far into the reply's audio the user speaks (a uniform draw; the first trial earliest)."""


def question() -> tuple[np.ndarray, float]:
    """The sample's first question, and where its speech starts (s)."""
    with wave.open(str(SAMPLE_CONVERSATION)) as sample:
        pcm = np.frombuffer(sample.readframes(sample.getnframes()), dtype="<i2")
    audio = pcm[int(0.5 * RATE) : int(2.5 * RATE)].astype(np.float32) / 32768
    frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    return audio, float(np.argmax(db > db.max() - 40)) * 0.02


class Progress:
    """playback.progress of the session, read back from Redis as it is added: only the
    session's partition, only the new entries. (Polled every 10 ms while a trial waits;
    reading every partition from the start cost ~6 ms of CPU a poll by the end of a run,
    a third of a core taken from the stages being measured.)"""

    def __init__(self, client: Redis, bus: BusSettings) -> None:
        self.client = client
        self.bus = bus
        self.stream = stream_for(PLAYBACK_PROGRESS, SESSION, bus.partitions)
        self.last_id = "0-0"
        self.seen: list[PlaybackProgress] = []

    async def of(self, turn: str) -> list[PlaybackProgress]:
        rows = await self.client.xrange(self.stream, min=f"({self.last_id}")
        for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], rows):
            self.last_id = entry_id.decode()
            message = decode_entry(
                StreamEntry(self.stream, entry_id, fields), PLAYBACK_PROGRESS, 10**8
            )
            self.seen.append(message.envelope)  # type: ignore[arg-type]
        return [progress for progress in self.seen if progress.turn_id == turn]

    async def wait(self, turn: str, state: str, timeout_s: float = 30) -> PlaybackProgress:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for progress in await self.of(turn):
                if progress.state == state:
                    return progress
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{turn}: no {state} in {timeout_s} s")

    async def controls(self, turn: str) -> list[Control]:
        found: list[Control] = []
        for stream in streams_of(CONTROL, self.bus.partitions):
            rows = await self.client.xrange(stream)
            for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], rows):
                message = decode_entry(StreamEntry(stream, entry_id, fields), CONTROL, 10**6)
                if message.envelope.turn_id == turn:
                    found.append(message.envelope)  # type: ignore[arg-type]
        return found


async def start_reply(out: Producer, turn: str, speech: list[TtsChunk]) -> None:
    for chunk in speech:
        # The turn is the chunks' origin: a new one per reply, or they are duplicates.
        ids = {"turn_id": turn, "message_id": f"{turn}:{chunk.seq}"}
        await out.publish(chunk.model_copy(update=ids))


async def barge_in_trial(
    out: Producer,
    n: int,
    speech: list[TtsChunk],
    mic: ScriptedMic,
    progress: Progress,
    spoken: tuple[np.ndarray, float],
    into_reply_s: float,
) -> tuple[float, float]:
    turn = f"bench-t{n}"
    await start_reply(out, turn, speech)
    playing = await progress.wait(turn, "playing")
    await asyncio.sleep(max(0.0, playing.created_at.timestamp() + into_reply_s - time.time()))
    audio, onset_s = spoken
    onset = mic.say(audio) + onset_s
    paused = await progress.wait(turn, "paused")
    await progress.wait(turn, "flushed")
    [pause, *_] = await progress.controls(turn)
    # The question ends and is transcribed before the next trial.
    await asyncio.sleep(len(audio) / RATE + 1.5 - (time.time() - onset + onset_s))
    return paused.created_at.timestamp() - onset, pause.created_at.timestamp() - onset


async def baseline_trial(
    out: Producer, n: int, speech: list[TtsChunk], progress: Progress, into_reply_s: float
) -> float:
    turn = f"bench-b{n}"
    await start_reply(out, turn, speech)
    playing = await progress.wait(turn, "playing")
    await asyncio.sleep(max(0.0, playing.created_at.timestamp() + into_reply_s - time.time()))
    asked = time.time()
    await out.publish(
        Control(session_id=SESSION, turn_id=turn, seq=0, command=Pause(target_turn_id=turn))
    )
    paused = await progress.wait(turn, "paused")
    await out.publish(
        Control(session_id=SESSION, turn_id=turn, seq=1, command=Interrupt(target_turn_id=turn))
    )
    await progress.wait(turn, "flushed")
    return paused.created_at.timestamp() - asked


def reply_chunks() -> list[TtsChunk]:
    synthesizer = make_synthesizer(TtsSettings(variation=0))
    chunks = []
    for index, text in enumerate(REPLY):
        speech = synthesizer.synthesize(text)
        chunks.append(
            TtsChunk(
                session_id=SESSION,
                turn_id="t",
                seq=index,
                index=index,
                final=index == len(REPLY) - 1,
                text=text,
                sample_rate=speech.sample_rate,
                pcm=speech.pcm,
            )
        )
    return chunks


def said_ready(log: Path) -> bool:
    return READY_TO_TALK in log.read_text(errors="replace")


async def wait_ready(
    client: Redis, bus: BusSettings, process: "subprocess.Popen[bytes]", log: Path
) -> None:
    """Until asr and playback read every partition of their ordered topics (control has no
    consumer group: every replica reads it from its start, and back control_history_s), and
    `marionette up` says it is ready to talk: its spares have loaded their models too. (A
    spare asr loading Whisper on both cores beside the first trial once delayed asr's view
    of the first reply by 55 ms instead of 2 to 7.)"""
    wanted = {
        AUDIO_FRAME.name: "asr", PLAYBACK_PROGRESS.name: "asr", TTS_CHUNK.name: "playback",
    }  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("marionette up exited; see its log")
        ready = True
        for topic in (AUDIO_FRAME, PLAYBACK_PROGRESS, TTS_CHUNK):
            for stream in streams_of(topic, bus.partitions):
                try:
                    consumers = await client.xinfo_consumers(stream, wanted[topic.name])
                except Exception:
                    consumers = []
                ready = ready and any(int(c["idle"]) < 10_000 for c in consumers)
        if ready and said_ready(log):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the stages did not start in 180 s")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def report(console: Console, barge: list[tuple[float, float]], baseline: list[float]) -> None:
    table = Table(title=f"Barge-in latency, {len(barge)} trials (ms)")
    for column in ("path", "p50", "p95", "max", "p50 vs baseline"):
        table.add_column(column, justify="right" if column != "path" else "left")
    rows: list[tuple[str, list[float]]] = [
        ("barge-in: speech -> last reply audio", [b[0] for b in barge]),
        ("  asr: speech -> pause on control", [b[1] for b in barge]),
        ("  playback: control -> quiet", [b[0] - b[1] for b in barge]),
        ("baseline: pause published -> quiet", baseline),
    ]
    base = statistics.median(baseline)
    for name, values in rows:
        ms = [v * 1000 for v in values]
        table.add_row(
            name,
            f"{percentile(ms, 50):.0f}",
            f"{percentile(ms, 95):.0f}",
            f"{max(ms):.0f}",
            f"{statistics.median(values) / base:.1f}x",
        )
    console.print(table)
    p95 = percentile([b[0] * 1000 for b in barge], 95)
    verdict = "meets" if p95 <= 100 else "misses"
    console.print(f"p95 {p95:.0f} ms {verdict} the 100 ms goal")


def start_stages(
    bus: BusSettings, folder: Path, settings: dict[str, str] | None = None
) -> "subprocess.Popen[bytes]":
    """`marionette up` with asr and playback; settings: more environment (MARIONETTE_*)."""
    env = {
        **os.environ,
        "REDIS_URL": bus.redis_url or "",
        "MARIONETTE_PARTITIONS": str(bus.partitions),
        "MARIONETTE_PLAYBACK_OUTPUT": "wav",
        "MARIONETTE_PLAYBACK_WAV_DIR": str(folder / "playback"),
        "MARIONETTE_TELEMETRY_TRACES": "off",
        "PYTHONUNBUFFERED": "1",
        **(settings or {}),
    }
    args = ["up", "--stage", "asr", "--stage", "playback", "--metrics-port", "0"]
    with (folder / "up.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services", *args],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def moments(trials: int, seed: int, *, earliest_first: bool) -> list[float]:
    """How far into the reply each trial speaks: uniform draws from a generator of its own
    (the global one is also drawn by libraries, redis-py's retry jitter, so its draws
    differed run to run)."""
    draws = random.Random(seed)
    drawn = [draws.uniform(EARLIEST_S, LATEST_S) for _ in range(trials)]
    return [EARLIEST_S, *drawn[: trials - 1]] if earliest_first and trials else drawn


async def measure(
    bus: BusSettings, trials: int, console: Console, process: "subprocess.Popen[bytes]",
    log: Path,
) -> None:  # fmt: skip
    client = Redis.from_url(bus.redis_url or "")
    try:
        speech = await asyncio.to_thread(reply_chunks)
        spoken = question()
        await wait_ready(client, bus, process, log)
        progress = Progress(client, bus)
        stop = asyncio.Event()
        async with Producer(bus, "bench", PUBLISHES) as out:
            mic = ScriptedMic(out, SESSION)
            listening = asyncio.create_task(mic.run(stop))
            barge, missed = [], 0
            for n, into_reply_s in enumerate(moments(trials, 7, earliest_first=True)):
                try:
                    barge.append(
                        await barge_in_trial(out, n, speech, mic, progress, spoken, into_reply_s)
                    )
                except TimeoutError as exc:
                    missed += 1  # reported, not hidden: the reply played on
                    console.print(f"trial {n + 1}/{trials}: MISSED ({exc})")
                    await progress.wait(f"bench-t{n}", "finished")
                    continue
                total, asr = barge[-1]
                console.print(
                    f"trial {n + 1}/{trials} ({into_reply_s:.2f} s into the reply): "
                    f"{total * 1000:.0f} ms (asr {asr * 1000:.0f}, "
                    f"playback {(total - asr) * 1000:.0f})"
                )
            baseline = [
                await baseline_trial(out, n, speech, progress, into_reply_s)
                for n, into_reply_s in enumerate(moments(trials, 8, earliest_first=False))
            ]
            stop.set()
            await listening
        report(console, barge, baseline)
        if missed:
            console.print(f"[red]{missed} of {trials} trials never paused the reply[/red]")
    finally:
        await client.aclose()


def run(bus: BusSettings, trials: int, console: Console, folder: Path) -> None:
    process = start_stages(bus, folder)
    try:
        asyncio.run(measure(bus, trials, console, process, folder / "up.log"))
    except Exception:
        console.print((folder / "up.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 trials")
    parser.add_argument("--logs", type=Path, help="keep the stages' log and WAVs here")
    args = parser.parse_args()
    trials = 5 if args.quick else args.trials
    console = Console()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.logs or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        url = os.environ.get("REDIS_URL")
        if url:
            run(load_bus_settings(redis_url=url), trials, console, folder)
            return
        with EmbeddedRedis() as server:
            run(load_bus_settings(redis_url=server.url), trials, console, folder)


if __name__ == "__main__":
    main()
