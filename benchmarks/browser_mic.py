"""End-to-end latency of the control panel's browser microphone, against the file-input path.

    python -m benchmarks.browser_mic [--quick] [--json PATH] [--questions N] [--max-tokens N]

One set of stages serves both paths: `marionette up --stage asr --stage policy --stage tts
--stage avatar --stage gateway --no-spares --metrics-port 0` with the bundled models
(temperature 0, a fixed seed, replies of at most 32 tokens), on an embedded Redis (or
REDIS_URL, which must name an empty database), the gateway on a free port. The same
question (the sample conversation's first line, 1 s of silence before it and 1.5 s after,
so asr's endpoint ends the utterance on both paths) is asked alternately over two paths, a
fresh session each time, N times each (4; quick 2) after one warm-up each:

- browser: the control panel (`/?session=S`) in Chromium (/usr/bin/chromium, Playwright)
  whose fake microphone plays the question (`--use-file-for-fake-audio-capture=WAV%noloop`,
  a fresh capture stream, so the file from its start, per page). Open mic is switched on,
  and off once the file has played (the page then sends `{"type": "end"}`). A script added
  to the page's context (the page's own files are untouched) timestamps getUserMedia and
  every message of the page's /ws/audio socket as the page receives it.
- file: the same WAV over `/ws/audio` from a websockets client in this process, paced in
  real time by `marionette mic --input`'s own sender (services.cli.mic.send_audio), then
  `{"type": "end"}`.

Two measures per turn, from the end of the user's speech (asr.final's `speech_end_at`, by
the gateway's capture clock: when the socket's first audio arrived, plus the audio before
the end of speech): (a) the turn's first tts.chunk added to Redis (its entry id's time);
(b) the first reply audio block received by the client (the page's performance clock, or
time.time() here: one machine, one clock). Each turn is also taken apart: asr (-> asr.final
on the bus), reply (-> first tts.chunk), out (-> the client); (c) = asr + out is what the
path itself changes, free of the LLM's and Piper's variation from turn to turn (which, on a
shared machine, is larger than the difference between the paths). A turn ends when its
client is told `finished`; the next question starts after that.

Prints figures; asserts nothing.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import httpx
import numpy as np
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import connect

from benchmarks.figures import nan_to_none
from contracts import AsrFinal, PolicyToken, TtsChunk
from contracts.topics import ASR_FINAL, AUDIO_FRAME, POLICY_TOKEN, TTS_CHUNK, Topic
from services.bus import BusSettings, load_bus_settings
from services.bus.partitions import stream_for
from services.bus.redis_server import EmbeddedRedis, free_port
from services.bus.wire import StreamEntry, decode_entry, entry_time
from services.capture.sources import FileSource
from services.capture.stage import SAMPLE_CONVERSATION
from services.cli.mic import send_audio
from services.replay.pacing import group_live

REPO_ROOT = Path(__file__).resolve().parents[1]
RATE = 16_000
QUESTION = "Hello Marionette, how are you today?"
QUESTION_S = (0.5, 2.5)
"""Where the question is in the sample conversation."""
LEAD_S, TAIL_S = 1.0, 1.5
"""Silence before and after it; the tail is longer than asr's endpoint (600 ms)."""
FAKE_MIC_PAD_S = 60.0
"""More silence in the browser's file: it plays once (%noloop), silence after that."""
STAGES = ("asr", "policy", "tts", "avatar", "gateway")
CONSUMERS: dict[Topic[Any], str] = {
    AUDIO_FRAME: "asr", ASR_FINAL: "policy", POLICY_TOKEN: "tts", TTS_CHUNK: "avatar",
}  # fmt: skip
"""A stage that must read every partition of the topic before the first question."""
START_TIMEOUT_S = 300.0
REPLY_TIMEOUT_S = 300.0
"""asr, the LLM and Piper share two cores with Chromium here: minutes, not seconds."""
PAGE_TIMEOUT_MS = 30_000
SETTLE_S = 1.0
"""Between turns: the finished turn's last messages (avatar, playback progress) go by."""
PATHS = ("browser", "file")
CHROMIUM = Path(os.environ.get("MARIONETTE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
MAX_MESSAGE_BYTES = 10**8
STAMPS = "__browserMicBench"
INIT_SCRIPT = """
(() => {
  const now = () => performance.timeOrigin + performance.now();
  const stamps = (window.STAMPS = {
    gumAt: null, readyAt: null, rate: null, endSentAt: null, firstChunkAt: null,
    firstBlockAt: null, blocks: 0, turn: null,
  });
  const media = navigator.mediaDevices;
  if (media && media.getUserMedia) {
    const getUserMedia = media.getUserMedia.bind(media);
    media.getUserMedia = async (constraints) => {
      const stream = await getUserMedia(constraints);
      stamps.gumAt = now(); // the fake microphone's file plays from about now
      return stream;
    };
  }
  const Native = window.WebSocket;
  class Timed extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      this.benchAudio = String(url).includes("/ws/audio");
      if (!this.benchAudio) return;
      // Added before the page sets onmessage: it runs first, before the page's handler.
      this.addEventListener("message", (message) => {
        const at = now();
        if (typeof message.data !== "string") {
          stamps.blocks += 1;
          if (stamps.firstBlockAt === null) stamps.firstBlockAt = at;
          return;
        }
        const event = JSON.parse(message.data);
        if (event.type === "ready" && stamps.readyAt === null) {
          stamps.readyAt = at;
          stamps.rate = event.rate;
        } else if (event.type === "chunk" && stamps.firstChunkAt === null) {
          stamps.firstChunkAt = at;
          stamps.turn = event.turn_id;
        }
      });
    }
    send(data) {
      if (this.benchAudio && typeof data === "string" && data.includes('"end"')) {
        if (stamps.endSentAt === null) stamps.endSentAt = now();
      }
      return super.send(data);
    }
  }
  window.WebSocket = Timed;
})();
""".replace("STAMPS", STAMPS)


# --- figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Milliseconds: p50 (the median), mean and max of a sample."""

    n: int
    p50: float
    mean: float
    max: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> "Spread":
        taken = [v for v in values_ms if not math.isnan(v)]
        if not taken:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(taken), statistics.median(taken), statistics.fmean(taken), max(taken))


@dataclass
class ClientStamps:
    """What a client saw of its turn (Unix seconds)."""

    ready_at: float = math.nan  # the socket's "ready"
    end_sent_at: float = math.nan  # {"type": "end"} sent
    first_chunk_at: float = math.nan  # the first chunk header
    first_block_at: float = math.nan  # the first reply audio block
    blocks: int = 0
    turn: str = ""
    rate: int = RATE  # what the client sent at
    ended: str = ""  # "finished" or "flushed"


@dataclass
class Turn:
    path: str  # "browser" or "file"
    number: int  # -1: a warm-up
    session: str
    status: str = "ok"
    turn_id: str = ""
    heard: str = ""
    reply: str = ""
    speech_end_at: float = math.nan  # asr.final's speech_end_at
    final_at: float = math.nan  # asr.final added to Redis
    first_chunk_at: float = math.nan  # the first tts.chunk of the turn added to Redis
    client: ClientStamps = field(default_factory=ClientStamps)

    @property
    def answered(self) -> bool:
        return self.status.startswith("ok")

    def ms(self, start: float, end: float) -> float:
        return (end - start) * 1000

    @property
    def bus_ms(self) -> float:
        """(a) end of speech -> the first tts.chunk on the bus."""
        return self.ms(self.speech_end_at, self.first_chunk_at)

    @property
    def client_ms(self) -> float:
        """(b) end of speech -> the first reply audio block at the client."""
        return self.ms(self.speech_end_at, self.client.first_block_at)

    @property
    def own_ms(self) -> float:
        """What the path itself can change, free of the LLM and Piper: asr + out."""
        return self.asr_ms + self.out_ms

    @property
    def asr_ms(self) -> float:
        return self.ms(self.speech_end_at, self.final_at)

    @property
    def reply_ms(self) -> float:
        return self.ms(self.final_at, self.first_chunk_at)

    @property
    def out_ms(self) -> float:
        return self.ms(self.first_chunk_at, self.client.first_block_at)

    @property
    def end_sent_ms(self) -> float:
        """End of speech -> the client said the input ended (after asr's endpoint)."""
        return self.ms(self.speech_end_at, self.client.end_sent_at)


MEASURES: dict[str, str] = {
    "bus_ms": "(a) -> 1st tts.chunk on the bus",
    "client_ms": "(b) -> 1st audio block at the client",
    "own_ms": "(c) (b) less the reply: asr + out",
}
PIECES: dict[str, str] = {
    "asr_ms": "asr: -> asr.final",
    "reply_ms": "reply: -> 1st tts.chunk",
    "out_ms": "out: -> 1st block at client",
    "end_sent_ms": "(end of input sent)",
}


@dataclass
class Result:
    questions: int
    warmups: int
    max_tokens: int
    turns: list[Turn] = field(default_factory=list)
    browser_rate: int | None = None
    seconds: float = 0.0

    def counted(self, path: str) -> list[Turn]:
        return [t for t in self.turns if t.path == path and t.number >= 0]

    def of(self, path: str, measure: str) -> list[float]:
        return [float(getattr(t, measure)) for t in self.counted(path) if t.answered]

    def spread(self, path: str, measure: str) -> Spread:
        return Spread.of(self.of(path, measure))

    def paired(self, measure: str) -> list[float]:
        """Per question number: browser - file (both answered)."""
        by_number: dict[int, dict[str, float]] = {}
        for turn in self.turns:
            if turn.number >= 0 and turn.answered:
                by_number.setdefault(turn.number, {})[turn.path] = getattr(turn, measure)
        return [pair["browser"] - pair["file"] for pair in by_number.values() if len(pair) == 2]


# --- the question ---------------------------------------------------------------------------


def write_wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(audio.astype("<i2").tobytes())
    return path


def question_wavs(folder: Path) -> tuple[Path, Path, float]:
    """The question as the file path sends it, the browser's fake microphone file (the same,
    then a long silence), and the first one's length in seconds."""
    with wave.open(str(SAMPLE_CONVERSATION)) as sample:
        if sample.getframerate() != RATE or sample.getnchannels() != 1:
            raise RuntimeError(f"{SAMPLE_CONVERSATION}: expected mono {RATE} Hz")
        audio = np.frombuffer(sample.readframes(sample.getnframes()), dtype="<i2")
    question = audio[int(QUESTION_S[0] * RATE) : int(QUESTION_S[1] * RATE)]
    silence = np.zeros(int(LEAD_S * RATE), dtype="<i2")
    tail = np.zeros(int(TAIL_S * RATE), dtype="<i2")
    said = np.concatenate([silence, question, tail])
    pad = np.zeros(int(FAKE_MIC_PAD_S * RATE), dtype="<i2")
    sent = write_wav(folder / "question.wav", said)
    fake = write_wav(folder / "fake-mic.wav", np.concatenate([said, pad]))
    return sent, fake, len(said) / RATE


# --- the stages -----------------------------------------------------------------------------


def log_tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read()[-4000:].decode(errors="replace")


async def gateway_answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            return (await http.get("/api/status")).status_code == 200
    except httpx.HTTPError:
        return False


@asynccontextmanager
async def stages(bus: BusSettings, max_tokens: int) -> AsyncIterator[str]:
    """`marionette up` with the stages (in a scratch directory), listening; the gateway's URL."""
    port = free_port()
    env = {
        k: v for k, v in os.environ.items()
        if k not in ("MARIONETTE_CONFIG", "MARIONETTE_GATEWAY_OPERATOR_KEY",
                     "MARIONETTE_GATEWAY_READ_KEY")
    }  # fmt: skip
    env.update({
        "REDIS_URL": bus.redis_url or "",
        "MARIONETTE_PARTITIONS": str(bus.partitions),
        "MARIONETTE_GATEWAY_HOST": "127.0.0.1",
        "MARIONETTE_GATEWAY_PORT": str(port),
        "MARIONETTE_POLICY_TEMPERATURE": "0",
        "MARIONETTE_POLICY_SEED": "7",
        "MARIONETTE_POLICY_MAX_TOKENS": str(max_tokens),
        "MARIONETTE_TTS_VARIATION": "0",
        "MARIONETTE_TELEMETRY_TRACES": "off",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    })  # fmt: skip
    args = ["up", "--no-spares", "--metrics-port", "0",
            *(a for s in STAGES for a in ("--stage", s))]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as scratch:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", *args, cwd=scratch, env=env,
            stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        client = Redis.from_url(bus.redis_url or "")
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not (
                all([await group_live(client, t, g, bus.partitions)
                     for t, g in CONSUMERS.items()])
                and await gateway_answers(url)
            ):  # fmt: skip
                if child.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the stages did not start:\n{log_tail(log)}")
                await asyncio.sleep(0.5)
            yield url
            if child.returncode is not None:
                raise RuntimeError(f"`marionette up` died during the run:\n{log_tail(log)}")
        finally:
            await client.aclose()
            await stop(child)


async def stop(child: asyncio.subprocess.Process) -> None:
    """Ctrl-C, as a user would stop `marionette up`; then its whole process group."""
    if child.returncode is None:
        child.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(child.wait(), 60)
            return
        except TimeoutError:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)  # the group of the child this started
    await child.wait()


# --- what the bus says of a turn --------------------------------------------------------------


async def session_entries(
    client: Redis, topic: Topic[Any], session: str, partitions: int, since: str = "-"
) -> list[tuple[bytes, Any]]:
    stream = stream_for(topic, session, partitions)
    found = []
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(stream, min=since))
    for entry_id, fields in entries:
        message = decode_entry(StreamEntry(stream, entry_id, fields), topic, MAX_MESSAGE_BYTES)
        if message.envelope.session_id == session:
            found.append((entry_id, message.envelope))
    return found


async def from_bus(client: Redis, bus: BusSettings, turn: Turn) -> None:
    """The turn's end of speech, asr.final and first tts.chunk, as Redis has them."""
    finals = await session_entries(client, ASR_FINAL, turn.session, bus.partitions)
    finals = [(i, f) for i, f in finals if isinstance(f, AsrFinal)]
    if not finals:
        raise RuntimeError("no asr.final for the session: nothing was heard")
    mine = [(i, f) for i, f in finals if f.turn_id == turn.client.turn] or finals[:1]
    final_id, final = mine[0]
    turn.turn_id = final.turn_id or ""
    turn.heard = final.text
    if final.speech_end_at is None:
        raise RuntimeError("asr.final has no speech_end_at")
    turn.speech_end_at = final.speech_end_at
    turn.final_at = entry_time(final_id)
    since = final_id.decode()
    chunks = await session_entries(client, TTS_CHUNK, turn.session, bus.partitions, since)
    mine_chunks = [i for i, c in chunks if isinstance(c, TtsChunk) and c.turn_id == turn.turn_id]
    if not mine_chunks:
        raise RuntimeError(f"no tts.chunk of {turn.turn_id}")
    turn.first_chunk_at = entry_time(mine_chunks[0])
    tokens = await session_entries(client, POLICY_TOKEN, turn.session, bus.partitions, since)
    for _, token in tokens:
        if isinstance(token, PolicyToken) and token.turn_id == turn.turn_id and token.final:
            turn.reply = token.reply_text or ""
    if len(finals) > 1:
        turn.status = f"ok ({len(finals)} utterances heard)"


# --- the two paths ----------------------------------------------------------------------------


async def file_client(ws_url: str, session: str, wav: Path) -> ClientStamps:
    """The WAV over /ws/audio in real time, then "end"; what came back, until `finished`."""
    stamps = ClientStamps()
    url = f"{ws_url}/ws/audio?session={session}&rate={RATE}"
    async with asyncio.timeout(REPLY_TIMEOUT_S), connect(url, max_size=1 << 20) as socket:
        ready = json.loads(await socket.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"/ws/audio: {ready}")
        stamps.ready_at = time.time()

        async def send() -> None:
            await send_audio(socket, FileSource(wav))
            stamps.end_sent_at = time.time()

        sending = asyncio.create_task(send())
        try:
            async for message in socket:
                at = time.time()
                if isinstance(message, bytes):
                    stamps.blocks += 1
                    if math.isnan(stamps.first_block_at):
                        stamps.first_block_at = at
                    continue
                event = json.loads(message)
                if "error" in event:
                    raise RuntimeError(f"/ws/audio: {event['error']}")
                if event["type"] == "chunk" and not stamps.turn:
                    stamps.turn, stamps.first_chunk_at = event["turn_id"], at
                elif event["type"] in ("finished", "flushed") and event["turn_id"] == stamps.turn:
                    stamps.ended = event["type"]
                    break
            if sending.done() and sending.exception() is not None:
                raise cast(BaseException, sending.exception())
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
    return stamps


async def browser_client(browser: Any, gateway: str, session: str, wav_s: float) -> ClientStamps:
    """The panel in a fresh context: open mic while the fake microphone says the question,
    then off; until the page is told `finished`."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        await context.add_init_script(INIT_SCRIPT)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{gateway}/?session={session}")
        await page.wait_for_selector("body[data-status-at]", timeout=PAGE_TIMEOUT_MS)
        await page.locator("#open-mic").check()
        await page.wait_for_selector("#voice[data-state=listening]", timeout=PAGE_TIMEOUT_MS)
        gum_at = float(await page.evaluate(f"window.{STAMPS}.gumAt")) / 1000
        await asyncio.sleep(max(0.0, gum_at + wav_s - time.time()))
        await page.locator("#open-mic").uncheck()
        await page.wait_for_function(
            "document.getElementById('voice').dataset.finished",
            polling=250, timeout=REPLY_TIMEOUT_S * 1000,
        )  # fmt: skip
        seen: dict[str, Any] = await page.evaluate(f"window.{STAMPS}")
        if errors:
            raise RuntimeError(f"the page had errors: {errors}")
    finally:
        await context.close()

    def unix(name: str) -> float:
        value = seen.get(name)
        return math.nan if value is None else float(value) / 1000

    return ClientStamps(
        ready_at=unix("readyAt"), end_sent_at=unix("endSentAt"),
        first_chunk_at=unix("firstChunkAt"), first_block_at=unix("firstBlockAt"),
        blocks=int(seen["blocks"]), turn=str(seen.get("turn") or ""),
        rate=int(seen.get("rate") or 0), ended="finished",
    )  # fmt: skip


# --- the run ----------------------------------------------------------------------------------


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(
    questions: int,
    warmups: int = 1,
    max_tokens: int = 32,
    redis_url: str | None = None,
    say: Callable[[str], None] = progress,
) -> Result:
    """Starts everything, asks the questions (alternating paths), stops everything."""
    from playwright.async_api import async_playwright

    if not await asyncio.to_thread(CHROMIUM.exists):
        raise RuntimeError(f"no Chromium at {CHROMIUM} (set MARIONETTE_CHROMIUM)")
    result = Result(questions, warmups, max_tokens)
    began = time.monotonic()
    async with AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="browser-mic-")))
        sent_wav, fake_wav, wav_s = question_wavs(folder)
        url = redis_url or stack.enter_context(EmbeddedRedis()).url
        client = Redis.from_url(url)
        stack.push_async_callback(client.aclose)
        if size := await client.dbsize():
            raise RuntimeError(f"{url} holds {size} keys: point REDIS_URL at an empty database")
        bus = load_bus_settings(redis_url=url)
        say(f"starting {', '.join(STAGES)} (the bundled models) ...")
        gateway = await stack.enter_async_context(stages(bus, max_tokens))
        ws_url = gateway.replace("http://", "ws://")
        playwright = await stack.enter_async_context(async_playwright())
        args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={fake_wav}%noloop"]
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        stack.push_async_callback(browser.close)
        nonce = uuid.uuid4().hex[:6]
        plan = [(-1, path) for path in PATHS for _ in range(warmups)]
        for number in range(questions):
            plan += [(number, p) for p in (PATHS if number % 2 == 0 else PATHS[::-1])]
        for number, path in plan:
            label = "warm-up" if number < 0 else f"question {number}"
            session = f"bm-{path[0]}{'w' if number < 0 else number}-{nonce}"
            say(f"  {label}: {path} (session {session})")
            turn = Turn(path, number, session)
            try:
                if path == "browser":
                    turn.client = await browser_client(browser, gateway, session, wav_s)
                else:
                    turn.client = await file_client(ws_url, session, sent_wav)
                await from_bus(client, bus, turn)
                if math.isnan(turn.client.first_block_at):
                    raise RuntimeError("no reply audio reached the client")
            except Exception as exc:
                turn.status = f"failed: {type(exc).__name__}: {exc}"[:300]
                say(f"    {turn.status}")
            if path == "browser" and turn.client.rate:
                result.browser_rate = turn.client.rate
            result.turns.append(turn)
            await asyncio.sleep(SETTLE_S)
    result.seconds = round(time.monotonic() - began, 1)
    return result


# --- report -----------------------------------------------------------------------------------


def ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"


def print_report(result: Result, console: Console) -> None:
    table = Table(
        title=f"End of speech -> reply audio: browser microphone (panel) vs file over /ws/audio, "
        f"{result.questions} questions per path (+{result.warmups} warm-up each)"
    )
    for name in ("measure", "path", "n", "p50 ms", "mean ms", "max ms"):
        table.add_column(name, justify="left" if name in ("measure", "path") else "right")
    for measure, label in MEASURES.items():
        spreads = {path: result.spread(path, measure) for path in PATHS}
        for path in PATHS:
            s = spreads[path]
            table.add_row(label if path == "browser" else "", path, str(s.n),
                          ms(s.p50), ms(s.mean), ms(s.max))  # fmt: skip
        b, f = spreads["browser"], spreads["file"]
        paired = Spread.of(result.paired(measure))
        table.add_row("", "browser adds", "", ms(b.p50 - f.p50), ms(b.mean - f.mean),
                      ms(b.max - f.max))  # fmt: skip
        table.add_row("", "  paired by question", str(paired.n), ms(paired.p50),
                      ms(paired.mean), ms(paired.max), end_section=True)  # fmt: skip
    rate = f"{result.browser_rate} Hz" if result.browser_rate else "?"
    table.caption = (
        "From asr.final's speech_end_at. (a): the turn's first tts.chunk entry in Redis; (b): "
        "the first binary message of /ws/audio as the page's script (browser) or the "
        "websockets client (file) received it; (c): (b) less asr.final -> 1st tts.chunk (the "
        "LLM and Piper, the same work on both paths). The page sent its microphone at "
        f"{rate}, the file path at {RATE} Hz. Same question, fresh session per turn, order "
        "alternating."
    )
    console.print(table)

    parts = Table(title="Where the time goes: p50 (mean) ms from the end of speech")
    parts.add_column("path")
    for label in PIECES.values():
        parts.add_column(label, justify="right")
    for path in PATHS:
        cells = []
        for piece in PIECES:
            s = result.spread(path, piece)
            cells.append(f"{ms(s.p50)} ({ms(s.mean)})")
        parts.add_row(path, *cells)
    parts.caption = (
        "asr: end of speech -> asr.final on the bus (endpoint wait + transcription); reply: -> "
        "the first tts.chunk (LLM + Piper); out: -> the first block at the client (the gateway's "
        "remote speaker, the socket, the page's event loop). End of input: when the client "
        'sent {"type": "end"} (after the utterance ended, on both paths).'
    )
    console.print(parts)

    turns = Table(title="Turns (ms from the end of speech)")
    for name in ("#", "path", "asr", "reply", "out", "(a) bus", "(b) client", "blocks",
                 "heard", "reply text / status"):  # fmt: skip
        left = name in ("path", "heard", "reply text / status")
        turns.add_column(name, justify="left" if left else "right")
    for t in result.turns:
        ok = t.answered
        turns.add_row(
            "w" if t.number < 0 else str(t.number), t.path, ms(t.asr_ms), ms(t.reply_ms),
            ms(t.out_ms), ms(t.bus_ms), ms(t.client_ms), str(t.client.blocks), t.heard[:40],
            (t.reply[:40] + ("" if t.status == "ok" else f" [{t.status}]")) if ok else t.status,
        )  # fmt: skip
    console.print(turns)

    b, f = (result.spread(p, "client_ms") for p in PATHS)
    own_b, own_f = (result.spread(p, "own_ms") for p in PATHS)
    paired = Spread.of(result.paired("client_ms"))
    pieces = {piece: [result.spread(p, piece).p50 for p in PATHS] for piece in PIECES}

    def compared(piece: str, what: str) -> str:
        browser, file = pieces[piece]
        return f"{what} {ms(browser)} against {ms(file)} ms ({ms(browser - file)})"

    reply_gap = pieces["reply_ms"][0] - pieces["reply_ms"][1]
    reply_larger = abs(reply_gap) > abs(own_b.p50 - own_f.p50)
    replies = {t.reply for t in result.turns if t.number >= 0 and t.answered}
    same = "the same reply text every time" if len(replies) == 1 else "replies that differed"
    failed = [t for t in result.turns if not t.answered]
    console.print(
        f"From the end of the user's speech to the first reply audio at the client, the panel's "
        f"browser microphone took p50 {ms(b.p50)} ms (mean {ms(b.mean)}, n={b.n}) and the file "
        f"over /ws/audio p50 {ms(f.p50)} ms (mean {ms(f.mean)}, n={f.n}): a difference of "
        f"{ms(b.p50 - f.p50)} ms at p50 ({ms(b.mean - f.mean)} ms mean, paired by question "
        f"{ms(paired.mean)} ms). {'Most of it' if reply_larger else 'A smaller part'} is the "
        "reply's: "
        + compared("reply_ms", "asr.final -> the first tts.chunk (the LLM and Piper)")
        + f", with {same}: that is the machine's load (its cores shared with Chromium on the "
        "browser path) and the LLM's variation from turn to turn, not how the audio came in. "
        "What the path itself changes: "
        + compared("asr_ms", "end of speech -> asr.final")
        + " and "
        + compared("out_ms", "bus -> the client (the page's event loop against a Python client)")
        + f"; together the browser path adds {ms(own_b.p50 - own_f.p50)} ms at p50 "
        f"({ms(own_b.mean - own_f.mean)} ms mean) to the file path's {ms(own_f.p50)} ms."
        + (f" {len(failed)} turn(s) failed (see the table)." if failed else "")
    )


def as_json(result: Result) -> dict[str, Any]:
    def turn_json(t: Turn) -> dict[str, Any]:
        figures = {name: getattr(t, name) for name in (*MEASURES, *PIECES)}
        return {**asdict(t), **figures}

    document: dict[str, Any] = {
        "questions": result.questions, "warmups": result.warmups,
        "max_tokens": result.max_tokens, "browser_rate": result.browser_rate,
        "seconds": result.seconds,
        "paths": {path: {m: asdict(result.spread(path, m)) for m in (*MEASURES, *PIECES)}
                  for path in PATHS},
        "browser_adds_ms": {
            m: {"p50": result.spread("browser", m).p50 - result.spread("file", m).p50,
                "mean": result.spread("browser", m).mean - result.spread("file", m).mean,
                "paired": result.paired(m)}
            for m in MEASURES
        },
        "turns": [turn_json(t) for t in result.turns],
    }  # fmt: skip
    return cast(dict[str, Any], nan_to_none(document))


async def bench(opts: argparse.Namespace) -> None:
    say = progress
    say(f"{opts.questions} questions per path (+1 warm-up each), max_tokens {opts.max_tokens}")
    result = await run(opts.questions, 1, opts.max_tokens, os.environ.get("REDIS_URL"), say)
    console = Console(width=140)
    print_report(result, console)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    console.print(f"[dim]{os.cpu_count()} CPUs; load average (1, 5, 15 min) at the end: {load}; "
                  f"{result.seconds} s[/dim]")  # fmt: skip
    if opts.json:
        document = {**as_json(result), "load_average": [round(x, 2) for x in os.getloadavg()]}
        await asyncio.to_thread(Path(opts.json).write_text, json.dumps(document, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 questions per path")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    parser.add_argument("--questions", type=int, help="questions per path (4; quick 2)")
    parser.add_argument("--max-tokens", type=int, default=32, help="longest reply (32)")
    opts = parser.parse_args()
    opts.questions = opts.questions or (2 if opts.quick else 4)
    asyncio.run(bench(opts))


if __name__ == "__main__":
    main()
