"""Barge-in through real processes: `marionette up` (asr, policy, tts, playback, avatar with
the real models) on the test Redis, and a scripted microphone (services.bench.scripted_mic)
publishing real-time audio frames as capture would.

A viewer's chat line starts a reply; 1.5 s into its audio the microphone speaks (the
sample's first question), coughs (250 ms of speech), or only hears the character itself
through the speakers. What the stages published, the WAV files playback wrote (one per
turn, as it played them) and the policy's memory in Redis are what is checked.
"""

import asyncio
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from contracts import (
    AsrFinal,
    AvatarExpr,
    ChatMessage,
    Interrupt,
    Pause,
    PlaybackProgress,
    PolicyToken,
)
from contracts.topics import (
    ASR_FINAL,
    AUDIO_FRAME,
    AVATAR_EXPR,
    CHAT_MESSAGE,
    CONTROL,
    PLAYBACK_PROGRESS,
    POLICY_TOKEN,
    TTS_CHUNK,
    Topic,
)
from services.bench.scripted_mic import ScriptedMic
from services.bus import BusSettings, Producer, load_bus_settings
from services.capture.stage import SAMPLE_CONVERSATION
from services.policy.memory import Memory
from services.replay.diff import word_error_rate
from services.replay.pacing import group_live
from tests.helpers import read_topic, wait_until
from tests.integration.workers import REPO_ROOT
from tests.regression.pipeline import marionette_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RATE = 16_000
BARGE_IN_AFTER_S = 1.5
STAGES = ("asr", "policy", "tts", "playback", "avatar")
READY = {
    AUDIO_FRAME: "asr", PLAYBACK_PROGRESS: "asr", CHAT_MESSAGE: "policy",
    POLICY_TOKEN: "tts", TTS_CHUNK: "playback",
}  # fmt: skip
"""Each ordered topic the test depends on, and a stage that must read all its partitions.
(control has no consumer group: every stage reads all of it, and back from its start.)"""
QUESTION = "Hello Marionette, how are you today?"
"""The sample's first line, 0.5 to 2.5 s into it."""


@dataclass
class Marionette:
    process: "subprocess.Popen[bytes]"
    log_path: Path
    wav_dir: Path
    bus: BusSettings

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


async def _wait_ready(marionette: Marionette) -> None:
    client = Redis.from_url(marionette.bus.redis_url or "")
    try:
        deadline = time.monotonic() + 180
        while not all(
            [await group_live(client, t, g, marionette.bus.partitions) for t, g in READY.items()]
        ):
            if marionette.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the stages did not start\n{marionette.log_tail()}")
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def marionette(
    redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Marionette]:
    folder = tmp_path_factory.mktemp("barge-in")
    bus = load_bus_settings(redis_url=redis_server_url, partitions=2)
    env = {
        **marionette_env(bus),
        "MARIONETTE_POLICY_MAX_TOKENS": "60",
        "MARIONETTE_PLAYBACK_OUTPUT": "wav",
        "MARIONETTE_PLAYBACK_WAV_DIR": str(folder / "playback"),
    }
    args = ["up", "--metrics-port", "0", *(a for s in STAGES for a in ("--stage", s))]
    log_path = folder / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services", *args],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = Marionette(process, log_path, folder / "playback", bus)
    try:
        asyncio.run(_wait_ready(running))
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    with wave.open(str(SAMPLE_CONVERSATION)) as sample:
        audio = np.frombuffer(sample.readframes(sample.getnframes()), dtype="<i2")
    return audio[int(0.5 * RATE) : int(2.5 * RATE)].astype(np.float32) / 32768


class Session:
    """One conversation: its microphone running, and what the stages published for it."""

    def __init__(self, marionette: Marionette, name: str, mic: ScriptedMic, out: Producer) -> None:
        self.marionette = marionette
        self.name = name
        self.mic = mic
        self.out = out
        self.client = Redis.from_url(marionette.bus.redis_url or "")

    async def of(self, topic: Topic[Any]) -> list[Any]:
        found = await read_topic(self.client, topic, self.marionette.bus.partitions)
        return sorted((m for m in found if m.session_id == self.name), key=lambda m: m.created_at)

    async def progress(self, turn: str) -> list[PlaybackProgress]:
        return [p for p in await self.of(PLAYBACK_PROGRESS) if p.turn_id == turn]

    async def wait_for_state(
        self, turn: str, state: str, timeout_s: float = 180
    ) -> PlaybackProgress:
        async def reached() -> bool:
            return any(p.state == state for p in await self.progress(turn))

        try:
            await wait_until(reached, timeout_s, f"{turn} {state}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.marionette.log_tail()}") from None
        return next(p for p in await self.progress(turn) if p.state == state)

    async def ask(self, text: str) -> str:
        turn = f"{self.name}-c1"
        await self.out.publish(
            ChatMessage(session_id=self.name, turn_id=turn, seq=0, platform="twitch",
                        author="viewer", text=text)
        )  # fmt: skip
        return turn

    async def memory(self) -> Memory:
        raw = await self.client.get(f"marionette:policy:memory:{self.name}")
        assert raw is not None, "policy kept no memory of the session"
        return Memory.model_validate_json(raw)

    def played_s(self, turn: str) -> float:
        with wave.open(str(self.marionette.wav_dir / self.name / f"{turn}.wav")) as played:
            return played.getnframes() / played.getframerate()


@pytest.fixture
async def session(marionette: Marionette, request: pytest.FixtureRequest) -> AsyncIterator[Session]:
    name = request.node.name.removeprefix("test_")[:24].replace("_", "-")
    echo = getattr(request, "param", None)
    stop = asyncio.Event()
    async with Producer(marionette.bus, "mic", [AUDIO_FRAME, CHAT_MESSAGE]) as out:
        mic = ScriptedMic(
            out, name, echo_dir=marionette.wav_dir if echo else None, echo_gain_db=echo or 0
        )
        listening = asyncio.create_task(mic.run(stop))
        opened = Session(marionette, name, mic, out)
        try:
            yield opened
        finally:
            stop.set()
            await listening
            await opened.client.aclose()


def speech_onset_s(audio: np.ndarray) -> float:
    """Where speech starts in the audio: its first 20 ms within 40 dB of its loudest."""
    frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    return float(np.argmax(db > db.max() - 40)) * 0.02


async def speak_into_reply(session: Session, turn: str, audio: np.ndarray) -> float:
    """Speak BARGE_IN_AFTER_S into the reply's audio; returns when the speech began (wall)."""
    playing = await session.wait_for_state(turn, "playing")
    started = playing.created_at.timestamp()
    await asyncio.sleep(max(0.0, started + BARGE_IN_AFTER_S - time.time()))
    return session.mic.say(audio) + speech_onset_s(audio)


async def test_talking_over_a_reply_interrupts_it_and_memory_keeps_what_was_heard(
    session: Session, question: np.ndarray
) -> None:
    turn = await session.ask("Tell me a long story about a brave little dragon.")
    spoke_at = await speak_into_reply(session, turn, question)

    flushed = await session.wait_for_state(turn, "flushed")
    finals = await session.of(ASR_FINAL)
    await wait_until(lambda: _has_final(session), 60, "the question's transcript")
    [final] = [f for f in await session.of(ASR_FINAL) if isinstance(f, AsrFinal)]
    await session.wait_for_state(final.turn_id, "finished")

    # The character went quiet at once, and not one block of the reply played after.
    states = [p.state for p in await session.progress(turn)]
    assert states[-2:] == ["paused", "flushed"], states
    paused = next(p for p in await session.progress(turn) if p.state == "paused")
    assert paused.played_s == flushed.played_s
    assert session.played_s(turn) == pytest.approx(flushed.played_s, abs=0.002)
    # It went quiet while the user was still speaking (how fast: benchmarks/barge_in.py),
    # and was interrupted only once that was clearly speech, not a cough.
    question_s = len(question) / RATE - speech_onset_s(question)
    assert spoke_at < paused.created_at.timestamp() < spoke_at + question_s
    controls = await session.of(CONTROL)
    assert [type(c.command) for c in controls] == [Pause, Interrupt]
    assert all(c.command.target_turn_id == turn for c in controls)
    assert controls[1].created_at.timestamp() - spoke_at >= 0.45

    # The mouth closed; nothing of that turn came after.
    exprs = [e for e in await session.of(AVATAR_EXPR) if e.turn_id == turn]
    assert isinstance(exprs[-1], AvatarExpr)
    assert (exprs[-1].state, exprs[-1].mouth_open) == ("idle", [])

    # The next reply answered the question that interrupted.
    assert word_error_rate(QUESTION, final.text) <= 0.25, final.text
    assert finals == [] or finals[0].turn_id == final.turn_id

    # Memory holds the reply as far as it was heard, marked as cut off.
    tokens = [t for t in await session.of(POLICY_TOKEN) if t.turn_id == turn and t.final]
    assert isinstance(tokens[0], PolicyToken)
    whole = tokens[0].reply_text or ""
    heard = flushed.heard_text or ""
    assert 0 < len(heard) < len(whole), (heard, whole)
    assert whole.split()[: len(heard.split())] == heard.split()
    memory = await session.memory()
    replies = [m for m in memory.messages if m.role == "assistant"]
    assert (replies[0].content, replies[0].interrupted) == (heard, True)
    assert memory.as_prompt()[1] == {"role": "assistant", "content": f"{heard}—"}
    assert memory.messages[2].content == final.text


async def _has_final(session: Session) -> bool:
    return bool(await session.of(ASR_FINAL))


async def test_a_cough_pauses_the_reply_for_a_moment_but_does_not_interrupt_it(
    session: Session, question: np.ndarray
) -> None:
    turn = await session.ask("Tell me a long story about a brave little dragon.")
    cough = question[int(0.1 * RATE) : int(0.35 * RATE)]  # 250 ms of speech
    await speak_into_reply(session, turn, cough)
    finished = await session.wait_for_state(turn, "finished")

    controls = [c.command for c in await session.of(CONTROL)]
    assert controls == [Pause(target_turn_id=turn), Pause(target_turn_id=turn, paused=False)]
    assert "flushed" not in [p.state for p in await session.progress(turn)]
    assert session.played_s(turn) == pytest.approx(finished.played_s, abs=0.002)
    assert await session.of(ASR_FINAL) == [], "a cough became a turn"
    memory = await session.memory()
    assert not any(m.interrupted for m in memory.messages)


@pytest.mark.parametrize("session", [-6.0], indirect=True, ids=["echo at -6 dB"])
async def test_the_characters_own_voice_through_the_speakers_does_not_interrupt_it(
    session: Session,
) -> None:
    turn = await session.ask("Tell me a long story about a brave little dragon.")
    await session.wait_for_state(turn, "finished")
    await asyncio.sleep(1.0)  # its echo's tail
    assert await session.of(CONTROL) == []
    assert await session.of(ASR_FINAL) == [], "the character took its own voice for a turn"
    audio_s = session.played_s(turn)
    assert audio_s > 3, "too short a reply to have tested anything"
