"""WS /ws/audio, a remote microphone and speaker, with real models and real clients.

asr, policy, tts, avatar and (local) playback run under `marionette up` with the real
models; the gateway runs in this process on the same Redis (uvicorn on a free port). The
clients are real WebSocket clients (websockets): a stand-in microphone that streams a low
noise floor in real time, with speech mixed in when told, and keeps what it is sent; and
`marionette mic` itself, run as a user would. One set of stages serves the whole module.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import wave
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import soundfile
import soxr
import websockets
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection

from contracts import AudioFrame, ChatMessage, Control, Interrupt, Pause, PlaybackProgress
from contracts.policy import PolicyToken
from contracts.speech import AsrFinal
from contracts.topics import (
    ASR_FINAL,
    AUDIO_FRAME,
    CHAT_MESSAGE,
    CONTROL,
    PLAYBACK_PROGRESS,
    POLICY_TOKEN,
    TTS_CHUNK,
    Topic,
)
from contracts.tts import TtsChunk
from services.asr.recognizer import FasterWhisperRecognizer
from services.asr.settings import AsrSettings
from services.bus import BusSettings, Producer, load_bus_settings
from services.capture.stage import SAMPLE_CONVERSATION
from services.playback.stage import remote_speaker_key
from services.policy.memory import Memory
from services.replay.pacing import group_live
from services.tts.normalize import normalize_for_speech
from tests.helpers import read_topic, wait_until, word_error_rate
from tests.integration.gateway_fixtures import OPERATOR_KEY, RunningGateway, running_gateway
from tests.integration.workers import REPO_ROOT
from tests.regression.pipeline import marionette_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RATE = 16_000
FRAME_S = 0.02
STAGES = ("asr", "policy", "tts", "avatar", "playback")
READY: dict[Topic[Any], str] = {
    AUDIO_FRAME: "asr", PLAYBACK_PROGRESS: "asr", CHAT_MESSAGE: "policy",
    POLICY_TOKEN: "tts", TTS_CHUNK: "playback",
}  # fmt: skip
"""Each ordered topic the tests depend on, and a stage that must read all its partitions."""
QUESTION = "Hello Marionette, how are you today?"
"""The sample's first line, 0.5 to 2.5 s into it."""
REPLY_WER = 0.3
REPLY_TIMEOUT_S = 300.0
"""asr, the LLM and Piper share two cores with whatever else runs: minutes, not seconds."""


# --- the stages, the gateway, a client ------------------------------------------------------


@dataclass
class Stages:
    process: "subprocess.Popen[bytes]"
    log_path: Path
    wav_dir: Path
    bus: BusSettings

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


async def _wait_ready(stages: Stages) -> None:
    client = Redis.from_url(stages.bus.redis_url or "")
    try:
        deadline = time.monotonic() + 180
        while not all(
            [await group_live(client, t, g, stages.bus.partitions) for t, g in READY.items()]
        ):
            if stages.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the stages did not start\n{stages.log_tail()}")
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def bus(redis_server_url: str) -> BusSettings:
    """The module's Redis, emptied once (not per test: the stages keep their groups)."""
    with redis.Redis.from_url(redis_server_url) as client:
        client.flushall()
    return load_bus_settings(redis_url=redis_server_url, partitions=2)


@pytest.fixture(scope="module")
def stages(bus: BusSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stages]:
    folder = tmp_path_factory.mktemp("gateway-audio")
    env = {
        **marionette_env(bus),
        "MARIONETTE_POLICY_MAX_TOKENS": "48",
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
    running = Stages(process, log_path, folder / "playback", bus)
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
async def gateway(bus: BusSettings) -> AsyncIterator[RunningGateway]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MARIONETTE_GATEWAY_OPERATOR_KEY", raising=False)
        async with running_gateway(bus, patch) as running:
            yield running


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    with wave.open(str(SAMPLE_CONVERSATION)) as sample:
        audio = np.frombuffer(sample.readframes(sample.getnframes()), dtype="<i2")
    return audio[int(0.5 * RATE) : int(2.5 * RATE)].astype(np.float32) / 32768


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperRecognizer:
    return FasterWhisperRecognizer(AsrSettings())


@pytest.fixture
async def store(bus: BusSettings) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(bus.redis_url or "")
    yield client
    await client.aclose()


class AudioClient:
    """A remote microphone and speaker: 20 ms of a low noise floor (speech mixed in by
    `say`) sent in real time at `rate`, and everything the gateway sends kept, timed."""

    def __init__(self, socket: ClientConnection, rate: int, ready: dict[str, Any]) -> None:
        self.socket = socket
        self.rate = rate
        self.ready = ready
        self.events: list[dict[str, Any]] = []
        self.audio: dict[str, bytearray] = defaultdict(bytearray)
        self.rates: dict[str, int] = {}
        self._turn = ""
        self._speech: deque[float] = deque()
        self._rng = np.random.default_rng(7)
        self._changed = asyncio.Event()
        self._started = 0.0
        self._sent = 0

    def say(self, audio: np.ndarray) -> float:
        """Speak 16 kHz float audio from the next frame on; when it starts (wall clock)."""
        resampled = audio if self.rate == RATE else soxr.resample(audio, RATE, self.rate)
        self._speech.clear()
        self._speech.extend(resampled.tolist())
        return self._started + self._sent * FRAME_S

    async def talk(self) -> None:
        self._started = time.time()
        samples = int(self.rate * FRAME_S)
        while True:
            await asyncio.sleep(max(0.0, self._started + (self._sent + 1) * FRAME_S - time.time()))
            audio = self._rng.normal(0, 10 ** (-60 / 20), samples).astype(np.float32)
            taken = [self._speech.popleft() for _ in range(min(samples, len(self._speech)))]
            audio[: len(taken)] += np.asarray(taken, dtype=np.float32)
            await self.socket.send((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
            self._sent += 1

    async def listen(self) -> None:
        async for message in self.socket:
            if isinstance(message, bytes):
                self.audio[self._turn].extend(message)
            else:
                event = {**json.loads(message), "at": time.monotonic()}
                self.events.append(event)
                if event["type"] == "chunk":
                    self._turn = event["turn_id"]
                    self.rates[self._turn] = event["sample_rate"]
            self._changed.set()

    def of_turn(self, turn: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("turn_id") == turn]

    async def wait_for(
        self, kind: str, turn: str | None = None, timeout_s: float = REPLY_TIMEOUT_S
    ) -> dict[str, Any]:
        async def seen() -> dict[str, Any]:
            while True:
                for event in self.events:
                    if event["type"] == kind and turn in (None, event.get("turn_id")):
                        return event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(seen(), timeout_s)


@asynccontextmanager
async def audio_client(
    gateway: RunningGateway, session: str, rate: int = RATE
) -> AsyncIterator[AudioClient]:
    url = f"{gateway.ws}/ws/audio?session={session}&rate={rate}"
    async with websockets.connect(url) as socket:
        ready = json.loads(await socket.recv())
        assert ready["type"] == "ready", ready
        client = AudioClient(socket, rate, ready)
        tasks = [asyncio.create_task(client.talk()), asyncio.create_task(client.listen())]
        try:
            yield client
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def of_session(bus: BusSettings, topic: Topic[Any], session: str) -> list[Any]:
    client = Redis.from_url(bus.redis_url or "")
    try:
        found = await read_topic(client, topic, bus.partitions)
    finally:
        await client.aclose()
    return [m for m in found if m.session_id == session]


def to_16k(pcm: bytes, rate: int) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    resampled = soxr.resample(samples, rate, RATE)
    return bytes((np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes())


async def reply_of(bus: BusSettings, session: str, turn: str) -> str:
    async def final() -> bool:
        tokens = await of_session(bus, POLICY_TOKEN, session)
        return any(t.turn_id == turn and t.final for t in tokens)

    await wait_until(final, 60, f"{turn}'s final token")
    tokens = [t for t in await of_session(bus, POLICY_TOKEN, session) if t.turn_id == turn]
    [last] = [t for t in tokens if isinstance(t, PolicyToken) and t.final]
    return last.reply_text or ""


# --- without the models: the socket itself ----------------------------------------------------


async def test_the_socket_is_a_microphone_of_its_own_capture_runs(
    gateway: RunningGateway, store: Redis, bus: BusSettings
) -> None:
    rng = np.random.default_rng(1)
    first = (rng.normal(0, 0.1, 8000) * 32767).astype("<i2").tobytes()  # 0.5 s
    second = (rng.normal(0, 0.1, 1000) * 32767).astype("<i2").tobytes()
    async with websockets.connect(f"{gateway.ws}/ws/audio?session=ws-mic") as socket:
        ready = json.loads(await socket.recv())
        assert ready == {"type": "ready", "session": "ws-mic", "rate": 16000, "run": ready["run"]}
        key = remote_speaker_key("ws-mic")
        assert await store.get(key) == gateway.runtime.replica_id.encode()
        for start in range(0, len(first), 1000):  # pieces that are no whole frame
            await socket.send(first[start : start + 1000])
        await socket.send(json.dumps({"type": "end"}))
        await socket.send(second)  # a new run

    async def both_runs_ended() -> bool:
        frames = await of_session(bus, AUDIO_FRAME, "ws-mic")
        return sum(bool(f.end_of_input) for f in frames) == 2

    await wait_until(both_runs_ended, 10, "the end of both runs")
    frames: list[AudioFrame] = await of_session(bus, AUDIO_FRAME, "ws-mic")
    runs = list(dict.fromkeys(f.origin for f in frames))
    assert runs[0] == ready["run"]
    assert len(runs) == 2
    assert all(r.startswith("gw-mic-") for r in runs)
    for run, sent in zip(runs, (first, second), strict=True):
        of_run = [f for f in frames if f.origin == run]
        assert [f.seq for f in of_run] == list(range(len(of_run)))
        assert {len(f.pcm) for f in of_run} == {640}, "20 ms at 16 kHz"
        audio = b"".join(f.pcm for f in of_run)
        assert audio[: len(sent)] == sent, "bit-exact"
        assert not any(audio[len(sent) :]), "padded with silence"
        assert [f.end_of_input for f in of_run] == [False] * (len(of_run) - 1) + [True]
        assert {f.turn_id for f in of_run} == {None}
        assert abs(of_run[0].captured_at - time.time()) < 30
    await wait_until(lambda: _gone(store, key), 5, "the remote speaker key to go")


async def _gone(store: Redis, key: str) -> bool:
    return bool(await store.exists(key) == 0)


async def test_other_rates_are_resampled_to_16_khz(
    gateway: RunningGateway, bus: BusSettings
) -> None:
    t = np.arange(48_000) / 48_000  # 1 s of 440 Hz at 48 kHz
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    async with websockets.connect(f"{gateway.ws}/ws/audio?session=ws-48k&rate=48000") as socket:
        await socket.recv()
        await socket.send(tone)

    async def ended() -> bool:
        return any(f.end_of_input for f in await of_session(bus, AUDIO_FRAME, "ws-48k"))

    await wait_until(ended, 10, "the end of the input")
    frames = await of_session(bus, AUDIO_FRAME, "ws-48k")
    audio = np.frombuffer(b"".join(f.pcm for f in frames), dtype="<i2").astype(np.float32)
    assert len(frames) == 50, "1 s in 20 ms frames"
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    assert np.argmax(spectrum) * RATE / 12000 == pytest.approx(440, abs=3)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("rate=12345", "query.rate"),
        ("rate=fast", "query.rate"),
        ("session=not%20a%20session", "query.session"),
        ("session=" + "x" * 65, "query.session"),
    ],
)
async def test_a_bad_query_is_refused_with_the_field_named(
    gateway: RunningGateway, query: str, field: str
) -> None:
    async with websockets.connect(f"{gateway.ws}/ws/audio?{query}") as socket:
        error = json.loads(await socket.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await socket.recv()
    assert [f["field"] for f in error["fields"]] == [field]
    assert error["error"] == error["fields"][0]["problem"]
    assert socket.close_code == 1008


@pytest.mark.parametrize(
    ("message", "field"), [(b"\x00\x01\x02", "message"), ('{"type": "play"}', "message.type")]
)
async def test_a_bad_message_is_refused_with_the_field_named(
    gateway: RunningGateway, message: bytes | str, field: str
) -> None:
    async with websockets.connect(f"{gateway.ws}/ws/audio?session=ws-bad") as socket:
        await socket.recv()
        await socket.send(message)
        error = json.loads(await socket.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await socket.recv()
    assert [f["field"] for f in error["fields"]] == [field]
    assert socket.close_code == 1008


@pytest.fixture
async def keyed_gateway(
    bus: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningGateway]:
    env = {"MARIONETTE_GATEWAY_OPERATOR_KEY": OPERATOR_KEY,
           "MARIONETTE_GATEWAY_READ_KEY": "read-only-key-0123456789"}  # fmt: skip
    async with running_gateway(bus, monkeypatch, env) as running:
        yield running


async def test_a_missing_or_wrong_key_is_refused_at_the_handshake(
    keyed_gateway: RunningGateway,
) -> None:
    url = f"{keyed_gateway.ws}/ws/audio?session=ws-keyed"
    for query in ("", "&key=not-the-key-0123456789", "&key=read-only-key-0123456789"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url + query):
                pass
        assert refused.value.response.status_code == 403, query
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    async with websockets.connect(url, additional_headers=headers) as socket:
        assert json.loads(await socket.recv())["type"] == "ready"


async def test_a_client_has_only_so_many_audio_sockets(gateway: RunningGateway) -> None:
    async def none_open() -> bool:
        return not getattr(gateway.runtime.stage.app.state, "audio_sockets", None) or not (
            gateway.runtime.stage.app.state.audio_sockets.per_client
        )

    await wait_until(none_open, 5, "the sockets of earlier tests to close")
    url = f"{gateway.ws}/ws/audio?session=ws-cap-"
    sockets = [await websockets.connect(f"{url}{n}") for n in range(4)]  # the default cap
    try:
        for socket in sockets:
            assert json.loads(await socket.recv())["type"] == "ready"
        async with websockets.connect(f"{url}4") as fifth:
            error = json.loads(await fifth.recv())
            with pytest.raises(websockets.ConnectionClosed):
                await fifth.recv()
        assert "MARIONETTE_GATEWAY_AUDIO_STREAMS_PER_CLIENT" in error["error"]
        assert fifth.close_code == 1008
        assert (fifth.close_reason or "").startswith("this client has 4 /ws/audio sockets open")
    finally:
        for socket in sockets:
            await socket.close()


async def test_a_newer_socket_of_a_session_takes_it_over(
    gateway: RunningGateway, store: Redis
) -> None:
    url = f"{gateway.ws}/ws/audio?session=ws-again"
    key = remote_speaker_key("ws-again")
    async with websockets.connect(url) as older:
        await older.recv()
        async with websockets.connect(url) as newer:
            assert json.loads(await newer.recv())["type"] == "ready"
            error = json.loads(await older.recv())
            assert error["fields"][0]["field"] == "query.session"
            with pytest.raises(websockets.ConnectionClosed):
                await older.recv()
            await asyncio.sleep(0.2)
            assert await store.get(key) is not None, "the newer one holds the session"
    await wait_until(lambda: _gone(store, key), 5, "the remote speaker key to go")


# --- with the models: a conversation over the socket ---------------------------------------


async def test_a_question_into_the_socket_is_answered_through_it(
    gateway: RunningGateway, stages: Stages, question: np.ndarray,
    whisper: FasterWhisperRecognizer,
) -> None:  # fmt: skip
    session = "ws-question"
    async with audio_client(gateway, session) as client:
        await asyncio.sleep(0.5)
        client.say(question)
        first = await client.wait_for("chunk")
        turn = first["turn_id"]
        finished = await client.wait_for("finished", turn)
    bus = stages.bus

    # What came back is the reply, sample for sample, and it sounds like its text.
    chunks: list[TtsChunk] = [c for c in await of_session(bus, TTS_CHUNK, session)
                              if c.turn_id == turn]  # fmt: skip
    assert bytes(client.audio[turn]) == b"".join(c.pcm for c in chunks)
    headers = [e for e in client.of_turn(turn) if e["type"] == "chunk"]
    assert [(h["index"], h["text"]) for h in headers] == [(c.index, c.text) for c in chunks]
    reply = await reply_of(bus, session, turn)
    heard = whisper.transcribe(to_16k(bytes(client.audio[turn]), client.rates[turn])).text
    print(f"\n{turn}: replied {reply!r}, its audio on the socket heard as {heard!r}")
    assert word_error_rate(normalize_for_speech(reply), heard) <= REPLY_WER, (reply, heard)

    # In real time: the last block came when the audio before it had played.
    total_s = sum(c.duration_s for c in chunks)
    playing = next(e for e in client.of_turn(turn) if e["type"] == "playing")
    assert finished["at"] - playing["at"] >= total_s - 0.1
    assert finished["played_s"] == pytest.approx(total_s, abs=0.01)

    # The gateway reported the playback for the session, once; local playback kept out.
    progress: list[PlaybackProgress] = [p for p in await of_session(bus, PLAYBACK_PROGRESS, session)
                                        if p.turn_id == turn]  # fmt: skip
    states = [p.state for p in progress]
    assert (states[0], states[-1]) == ("playing", "finished"), states
    assert [p.seq for p in progress] == list(range(len(progress))), "one speaker reported"
    assert [e["type"] for e in client.of_turn(turn) if e["type"] != "chunk"] == states
    assert not (stages.wav_dir / session).exists(), "local playback played the session"

    # The question was heard as it was said, from frames of the socket's own capture run.
    finals: list[AsrFinal] = await of_session(bus, ASR_FINAL, session)
    assert [f.turn_id for f in finals] == [turn]
    assert word_error_rate(QUESTION, finals[0].text) <= 0.25, finals[0].text
    frames = await of_session(bus, AUDIO_FRAME, session)
    assert {f.origin for f in frames} == {client.ready["run"]}


async def test_talking_over_a_reply_on_the_socket_interrupts_it(
    gateway: RunningGateway, stages: Stages, question: np.ndarray
) -> None:
    session, bus = "ws-barge-in", stages.bus
    turn = f"{session}-c1"
    async with audio_client(gateway, session, rate=48_000) as client:  # resampled in the gateway
        async with Producer(bus, "viewer", [CHAT_MESSAGE]) as chat:
            await chat.publish(
                ChatMessage(session_id=session, turn_id=turn, seq=0, platform="twitch",
                            author="viewer", text="Tell me a long story about a brave dragon.")
            )  # fmt: skip
        await client.wait_for("playing", turn)
        await asyncio.sleep(1.5)
        spoke_at = client.say(question)
        paused = await client.wait_for("paused", turn, timeout_s=30)
        flushed = await client.wait_for("flushed", turn, timeout_s=30)
        await asyncio.sleep(0.3)
        played = len(client.audio[turn]) / 2 / client.rates[turn]

    # The character went quiet at once; not one block of the reply came after.
    kinds = [e["type"] for e in client.of_turn(turn) if e["type"] != "chunk"]
    assert kinds[-2:] == ["paused", "flushed"], kinds
    assert paused["played_s"] == flushed["played_s"]
    assert played == pytest.approx(flushed["played_s"], abs=0.021)
    controls: list[Control] = await of_session(bus, CONTROL, session)
    assert [type(c.command) for c in controls][:2] == [Pause, Interrupt]
    assert all(c.command.target_turn_id == turn for c in controls[:2])  # type: ignore[union-attr]
    assert controls[0].created_at.timestamp() > spoke_at

    # policy remembers the reply as far as it was heard, marked as cut off.
    heard = flushed["heard_text"]
    assert heard, "some of the reply was heard"

    async def cut_short() -> bool:
        raw = await Redis.from_url(bus.redis_url or "").get(f"marionette:policy:memory:{session}")
        memory = Memory.model_validate_json(raw) if raw else Memory()
        return any(m.role == "assistant" and m.interrupted for m in memory.messages)

    await wait_until(cut_short, 30, "policy to cut the reply short")
    client_redis = Redis.from_url(bus.redis_url or "")
    raw = await client_redis.get(f"marionette:policy:memory:{session}")
    await client_redis.aclose()
    assert raw is not None
    replies = [m for m in Memory.model_validate_json(raw).messages if m.role == "assistant"]
    assert (replies[0].content, replies[0].interrupted) == (heard, True)
    whole = await reply_of(bus, session, turn)
    print(f"\n{turn}: replied {whole!r}, heard {heard!r} before the user spoke over it")
    assert len(heard) < len(whole)
    assert whole.split()[: len(heard.split())] == heard.split()


async def test_marionette_mic_sends_a_file_and_writes_the_reply(
    gateway: RunningGateway, stages: Stages, question: np.ndarray, tmp_path: Path
) -> None:
    session = "ws-cli"
    # A 44.1 kHz stereo file, as a user might have: the client resamples it.
    stereo = np.repeat(soxr.resample(question, RATE, 44_100)[:, None], 2, axis=1)
    soundfile.write(tmp_path / "question.wav", stereo, 44_100)
    env = {k: v for k, v in os.environ.items() if k != "MARIONETTE_GATEWAY_OPERATOR_KEY"}
    args = [
        "mic", "--input", str(tmp_path / "question.wav"), "--to", f"{gateway.ws}/ws/audio",
        "--session", session, "--output", "wav", "--out-dir", str(tmp_path / "replies"),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", *args, cwd=REPO_ROOT, env={**env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), REPLY_TIMEOUT_S + 60)
    printed = output.decode(errors="replace")
    print(f"\n`marionette mic` printed:\n{printed}")
    assert process.returncode == 0, printed

    [written] = (tmp_path / "replies" / session).glob("*.wav")
    turn = written.stem
    chunks = [c for c in await of_session(stages.bus, TTS_CHUNK, session) if c.turn_id == turn]
    with wave.open(str(written)) as wav:
        assert wav.getframerate() == chunks[0].sample_rate
        assert wav.readframes(wav.getnframes()) == b"".join(c.pcm for c in chunks)
    assert chunks[0].text in printed, printed
    assert str(written) in printed
    progress = [p for p in await of_session(stages.bus, PLAYBACK_PROGRESS, session)
                if p.turn_id == turn]  # fmt: skip
    assert progress[-1].state == "finished"
