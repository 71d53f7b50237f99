"""False interruptions and backchannels: does the character go on, or stop for good?

    python -m benchmarks.false_interruptions [--trials N] [--quick]

Like benchmarks.barge_in, through real processes (`marionette up --stage asr --stage
playback`, faster-whisper, the real VAD, WAV playback in real time): this script plays a
reply as tts would and, 0.8 to 2 s into its audio, a scripted microphone makes a sound over
it. The sounds:
- backchannels, spoken by Piper: "Uh-huh, yeah.", "Mm-hmm, right.", "Yeah, yeah, okay.",
  "Ha ha ha!" (a laugh);
- noise: a 0.8 s burst of speech-shaped noise (a cough, a chair), no words in it;
- a question (the sample's "Hello Marionette, how are you today?"), which must interrupt.

Each trial ends as one of: interrupted (playback flushed the reply), resumed (it paused,
then played on), not paused (the sound never paused it). The same trials run against asr
with `resume_false_interruption` off (the behaviour before it: speech over the character
past barge_in_min_speech_ms interrupts it, words or not) and on, in the same run, each
with its own `marionette up`. For resumed trials, how long the character was quiet.
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from benchmarks.barge_in import (
    PUBLISHES,
    RATE,
    SESSION,
    Progress,
    moments,
    question,
    reply_chunks,
    start_reply,
    start_stages,
    wait_ready,
)
from contracts import TtsChunk
from services.bench.scripted_mic import ScriptedMic
from services.bus import BusSettings, Producer, load_bus_settings
from services.bus.redis_server import EmbeddedRedis
from services.tts.settings import TtsSettings
from services.tts.synthesizer import make_synthesizer

BACKCHANNELS = ("Uh-huh, yeah.", "Mm-hmm, right.", "Yeah, yeah, okay.", "Ha ha ha!")
SETTLE_S = 6.0
"""After the sound: long enough for the words to be known and the reply to go on."""


@dataclass(frozen=True)
class Sound:
    name: str
    audio: np.ndarray  # 16 kHz float32
    should_interrupt: bool


@dataclass(frozen=True)
class Outcome:
    sound: str
    result: str  # "interrupted", "resumed", "not paused"
    quiet_s: float | None  # resumed: from the pause to playing again


def sounds() -> list[Sound]:
    voice = make_synthesizer(TtsSettings(variation=0))
    made = []
    for text in BACKCHANNELS:
        speech = voice.synthesize(text)
        audio = np.frombuffer(speech.pcm, dtype="<i2").astype(np.float32) / 32768
        made.append(Sound(text, soxr.resample(audio, speech.sample_rate, RATE), False))
    made.append(Sound("noise burst (0.8 s)", noise_burst(), False))
    made.append(Sound("a question", question()[0], True))
    return made


def noise_burst() -> np.ndarray:
    """0.8 s of noise shaped like speech (low-passed, a syllable-rate envelope), at about
    the loudness of the Piper voice."""
    rng = np.random.default_rng(3)
    samples = int(0.8 * RATE)
    noise = np.convolve(rng.normal(0, 1, samples), np.ones(6) / 6, mode="same")
    envelope = 0.6 + 0.4 * np.sin(np.linspace(0, 2 * np.pi * 3, samples))
    burst: np.ndarray = (noise * envelope).astype(np.float32)
    return 0.25 * burst / float(np.abs(burst).max())


@dataclass(frozen=True)
class Stage:
    """What a trial plays on: the producer, the microphone, the session's progress, and
    the reply it interrupts."""

    out: Producer
    mic: ScriptedMic
    progress: Progress
    reply: list[TtsChunk]


async def trial(stage: Stage, turn: str, sound: Sound, into_s: float) -> Outcome:
    out, mic, progress = stage.out, stage.mic, stage.progress
    await start_reply(out, turn, stage.reply)
    playing = await progress.wait(turn, "playing")
    await asyncio.sleep(max(0.0, playing.created_at.timestamp() + into_s - time.time()))
    mic.say(sound.audio)
    await asyncio.sleep(len(sound.audio) / RATE + SETTLE_S)
    states = [(p.state, p.created_at.timestamp()) for p in await progress.of(turn)]
    paused_at = next((at for state, at in states if state == "paused"), None)
    if any(state == "flushed" for state, _ in states):
        result, quiet = "interrupted", None
    elif paused_at is None:
        result, quiet = "not paused", None
    else:
        again = [at for state, at in states if state == "playing" and at > paused_at]
        result, quiet = "resumed", (again[0] - paused_at if again else None)
    # Let the reply end (or stop it) before the next trial.
    if result != "interrupted":
        await progress.wait(turn, "finished", timeout_s=60)
    return Outcome(sound.name, result, quiet)


async def run_config(
    bus: BusSettings,
    label: str,
    resume: bool,
    played: tuple[list[TtsChunk], list[Sound]],
    trials: int,
    folder: Path,
    console: Console,
) -> list[Outcome]:
    """Every sound `trials` times, against asr with resume_false_interruption `resume`."""
    reply, made = played
    env = {"MARIONETTE_ASR_RESUME_FALSE_INTERRUPTION": "true" if resume else "false"}
    process = start_stages(bus, folder, env)
    client = Redis.from_url(bus.redis_url or "")
    outcomes: list[Outcome] = []
    try:
        await wait_ready(client, bus, process, folder / "up.log")
        progress = Progress(client, bus)
        stop = asyncio.Event()
        async with Producer(bus, "bench", PUBLISHES) as out:
            mic = ScriptedMic(out, SESSION)
            listening = asyncio.create_task(mic.run(stop))
            stage = Stage(out, mic, progress, reply)
            for n, into_s in enumerate(moments(trials * len(made), 11, earliest_first=False)):
                sound = made[n % len(made)]
                outcome = await trial(stage, f"fi-{int(resume)}-{n}", sound, into_s)
                outcomes.append(outcome)
                console.print(f"{label}: {sound.name!r} -> {outcome.result}")
            stop.set()
            await listening
    finally:
        await client.aclose()
        process.terminate()
        process.wait(timeout=60)
    return outcomes


def report(
    console: Console, made: list[Sound], results: dict[str, list[Outcome]], trials: int
) -> None:
    table = Table(title=f"Sounds over the talking character, {trials} trials each")
    table.add_column("sound")
    for label in results:
        table.add_column(label, justify="right")
    for sound in made:
        cells = []
        for outcomes in results.values():
            mine = [o for o in outcomes if o.sound == sound.name]
            counts = Counter(o.result for o in mine)
            quiet = [o.quiet_s for o in mine if o.quiet_s is not None]
            text = ", ".join(f"{n} {result}" for result, n in counts.most_common())
            if quiet:
                text += f" (quiet {statistics.median(quiet) * 1000:.0f} ms)"
            cells.append(text)
        wanted = "interrupt" if sound.should_interrupt else "go on"
        table.add_row(f"{sound.name} (should {wanted})", *cells)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=4, help="trials per sound and setting")
    parser.add_argument("--quick", action="store_true", help="1 trial per sound and setting")
    parser.add_argument("--logs", type=Path, help="keep the stages' logs in this folder")
    args = parser.parse_args()
    trials = 1 if args.quick else args.trials
    console = Console()
    played = (reply_chunks(), sounds())
    results: dict[str, list[Outcome]] = {}
    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis() as server:
        url = os.environ.get("REDIS_URL") or server.url
        for label, resume in (("resume off (before)", False), ("resume on", True)):
            here = (args.logs or Path(folder)) / ("on" if resume else "off")
            here.mkdir(parents=True, exist_ok=True)
            bus = load_bus_settings(redis_url=url)
            results[label] = asyncio.run(
                run_config(bus, label, resume, played, trials, here, console)
            )
    report(console, played[1], results, trials)


if __name__ == "__main__":
    main()
