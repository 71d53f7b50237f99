"""Many conversations at once: chat sessions, NPC dialogues and voice sessions in parallel.

    python -m benchmarks.load [--quick] [--out PATH] [--backends embedded,openai]
                              [--replicas 1,2] [--chat 1,5,20,50] [--dialogue 1,5,20,50]
                              [--voice 1,2,4] [--turns 1] [--max-tokens 32]
                              [--llama-server PATH] [--slots 4] [--logs DIR]

For each policy backend and each replica count R, one set of stage processes runs under
the supervisor `marionette up` uses (services.supervisor, no spares): policy x R, tts x R,
the gateway, and asr when there are voice cases; on an embedded Redis (or REDIS_URL, an
empty database). Replies: temperature 0, a fixed seed, at most --max-tokens tokens. Each
kind of case starts with one turn that is not counted (its persona's prompt into the
model's cache, Piper's and Whisper's first calls), then its sizes, smallest first: N
sessions started at once, --turns turns each (one after the other within a session),
every session its own id. Every case has a deadline (60 s + 8 s per turn); a turn not
answered by then is reported, not waited for:

- chat: `POST /api/chat` to the gateway, as the control panel and any HTTP client send
  chat (the CLI publishes chat.message straight to Redis instead: the same message, minus
  the HTTP hop; the gateway is the way many outside clients reach the character, so the
  load goes through it). First audio: from the request to the turn's first tts.chunk
  with audio in Redis (its entry id's time; one machine, one clock).
- dialogue: `POST /api/dialogue/stream` (SSE), N NPC conversations with the bundled
  `grumpy` persona, a player each. First audio: from the request to the first `sentence`
  event at the client. (Without audio in the request; tts still speaks the replies, so
  their cost is counted.)
- voice: `/ws/audio` remote microphones, M at once, each sending the sample question
  (the other benchmarks' WAV: 1 s of silence, the question, 1.5 s of silence; 4.5 s sent
  in real time, inside the turn's time) then `{"type": "end"}`. First audio: from the end
  of speech (asr.final's speech_end_at) to the turn's first tts.chunk with audio.

Figures per case: turns per minute (turns answered / first input to last reply done:
the final tts.chunk, or the final SSE event), first audio p50/p95, seconds per turn and
CPU seconds per turn (all processes: stages, Redis, the LLM server) against N=1 of the
same kind in the same run, the most replies being written at once (policy.token of
different turns overlapping on the bus; for llama-server also its busy /slots), each
stage's consumer-group lag and pending at most (sampled every 0.5 s), and CPU seconds
and peak RSS per stage (replicas added up; per process in the JSON). After each case the
run waits until no stage has work left, and that work counts to the case's CPU.

Backends: `embedded` is policy's default, llama.cpp in the stage process with the bundled
Qwen 0.5B. The others start an OpenAI-compatible server on the same model, once, shared by
the policy replicas: `llama-server`, llama.cpp's own server with `--parallel SLOTS`
(--llama-server PATH, $LLAMA_SERVER, or on PATH; no PyPI wheel's binary runs on every
x86-64, see docs/benchmarks.md), or `llama-cpp-python`, its server
(`python -m llama_cpp.server`), which answers one request at a time (one model behind one
lock; started with --interrupt_requests False, or each new request would cut the reply
being streamed short). `openai`: llama-server when one is found, else llama-cpp-python.

Prints markdown tables; --out writes the figures as JSON. Asserts nothing.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from benchmarks.browser_mic import question_wavs
from benchmarks.figures import stop_child
from benchmarks.load_report import (
    CaseResult,
    ConfigResult,
    TurnResult,
    as_json,
    failures,
    markdown,
    summary,
)
from benchmarks.load_watch import Backlog, BusWatch, Processes, Slots, generations, input_streams
from benchmarks.load_watch import most_at_once as overlapping
from services.bus import BusSettings, load_bus_settings
from services.bus.ownership import lease_key
from services.bus.redis_server import EmbeddedRedis, free_port
from services.capture.sources import FileSource
from services.cli.mic import send_audio
from services.models import prepare
from services.models.bundled import QWEN_05B
from services.supervisor import StageFailed, Supervisor
from services.system import stage_children

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_LIMIT = str(10**9)
NPC = "grumpy"
CHAT_LINES = (
    "Hi! What game should we play next?",
    "What is your favourite colour?",
    "Tell me something funny about cats.",
    "How is the weather where you are?",
    "Do you like pizza or pasta more?",
    "What did you do this morning?",
    "Can you say hello to my friend Sam?",
    "Which song should we listen to now?",
)
NPC_LINES = (
    "Hello there! What do you sell in this shop?",
    "I am looking for a sword. Do you have one?",
    "Have you seen a dragon around here lately?",
    "Can you tell me the way to the old castle?",
)
SAMPLE_S = 0.5
START_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = 120.0
Say = Callable[[str], None]


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    chat: tuple[int, ...] = (1, 5, 20, 50)
    dialogue: tuple[int, ...] = (1, 5, 20, 50)
    voice: tuple[int, ...] = (1, 2, 4)
    replicas: tuple[int, ...] = (1, 2)
    turns: int = 1
    """Turns per session, one after the other."""
    max_tokens: int = 32
    case_timeout_s: float = 60.0
    turn_timeout_s: float = 8.0
    """A case's deadline: case_timeout_s + turn_timeout_s per turn in it."""


QUICK = Plan(chat=(1, 2), dialogue=(1, 2), voice=(1,), replicas=(1,))


@dataclass(frozen=True)
class Backend:
    """How policy reaches its LLM."""

    name: str
    env: Mapping[str, str]
    """MARIONETTE_POLICY_* for the policy replicas."""
    server_pid: int | None = None
    """An LLM server process: its CPU and memory count too."""
    slots_url: str | None = None
    """llama-server's /slots, to count the slots working at once."""
    slots: int | None = None


EMBEDDED = Backend("embedded", {"MARIONETTE_POLICY_BACKEND": "llamacpp"})
SERVERS = ("llama-server", "llama-cpp-python")
"""OpenAI-compatible servers this benchmark can start on the bundled model."""


def find_llama_server(given: str | None) -> str | None:
    found = given or os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")
    if found and not Path(found).is_file():
        raise SystemExit(f"no llama-server at {found}")
    return found


@asynccontextmanager
async def openai_server(
    kind: str, slots: int, binary: str | None, folder: Path, say: Say, threads: int = 2
) -> AsyncIterator[Backend]:
    """An OpenAI-compatible server on the bundled model, on a free port, until the block ends.
    kind: llama-server (needs binary) or llama-cpp-python."""
    model = await asyncio.to_thread(prepare, QWEN_05B, show_progress=False)
    port = free_port()
    if kind == "llama-server":
        if binary is None:
            raise SystemExit("llama-server: give --llama-server PATH (or set LLAMA_SERVER)")
        argv = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                "--parallel", str(slots), "--ctx-size", str(2048 * slots),
                "--threads", str(threads), "--alias", "qwen", "--no-webui"]  # fmt: skip
    else:
        slots = 1
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                "--model_alias", "qwen", "--host", "127.0.0.1", "--port", str(port),
                "--n_threads", str(threads), "--n_ctx", "2048",
                "--interrupt_requests", "False"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    say(f"starting {kind} ({slots} slot(s)) on port {port} ...")
    log = folder / f"{kind}.log"
    with log.open("wb") as out:
        server = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=folder
        )
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not await answers(http, f"{url}/v1/models"):
                if server.returncode is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{kind} did not start:\n{tail}")
                await asyncio.sleep(0.2)
        env = {"MARIONETTE_POLICY_BACKEND": "openai", "MARIONETTE_POLICY_BASE_URL": f"{url}/v1",
               "MARIONETTE_POLICY_MODEL": "qwen"}  # fmt: skip
        yield Backend(
            f"openai: {kind}" + ("" if threads == 2 else f", {threads} thread(s)"), env,
            server.pid,
            f"{url}/slots" if kind == "llama-server" else None, slots,
        )  # fmt: skip
    finally:
        await stop_child(server, grace_s=20)


# --- the stages ---------------------------------------------------------------------------


@dataclass
class Running:
    """A set of stage processes, serving, and what watches them."""

    bus: BusSettings
    client: Redis
    url: str
    supervisor: Supervisor
    watch: BusWatch
    processes: Processes
    backlog: Backlog
    slots: Slots
    log: deque[str] = field(default_factory=lambda: deque(maxlen=300))

    def restarts(self) -> int:
        return sum(child.restarts for child in self.supervisor.children.values())


def stage_env(bus: BusSettings, backend: Backend, port: int, max_tokens: int) -> dict[str, str]:
    # A key or a config file of the developer's own would change what is measured.
    skip = ("MARIONETTE_CONFIG", "MARIONETTE_GATEWAY_OPERATOR_KEY", "MARIONETTE_GATEWAY_READ_KEY")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env.update({
        "REDIS_URL": bus.redis_url or "",
        "MARIONETTE_PARTITIONS": str(bus.partitions),
        "MARIONETTE_GATEWAY_HOST": "127.0.0.1",
        "MARIONETTE_GATEWAY_PORT": str(port),
        "MARIONETTE_GATEWAY_CHAT_PER_MINUTE": NO_LIMIT,
        "MARIONETTE_GATEWAY_DIALOGUE_PER_MINUTE": NO_LIMIT,
        "MARIONETTE_GATEWAY_AUDIO_STREAMS_PER_CLIENT": "64",
        "MARIONETTE_GATEWAY_DIALOGUE_TIMEOUT_S": "600",
        "MARIONETTE_POLICY_TEMPERATURE": "0",
        "MARIONETTE_POLICY_SEED": "7",
        "MARIONETTE_POLICY_MAX_TOKENS": str(max_tokens),
        "MARIONETTE_TTS_VARIATION": "0",
        "MARIONETTE_TELEMETRY_TRACES": "off",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        **backend.env,
    })  # fmt: skip
    return env


def supervised(supervisor: Supervisor, failed: list[BaseException]) -> threading.Event:
    """Poll the supervisor on a thread (it replaces what dies) until the event is set."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            try:
                supervisor.poll()
            except StageFailed as exc:
                failed.append(exc)
                return

    threading.Thread(target=watch, name="supervisor", daemon=True).start()
    return stop


def is_redis(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redis" in command or b"valkey" in command


async def redis_pid(client: Redis) -> int | None:
    """Redis's own process, when it runs on this machine (not in a container)."""
    pid = int((await client.info("server")).get("process_id") or 0)
    return pid if pid and await asyncio.to_thread(is_redis, pid) else None


async def wait_ready(
    running: Running, replicas: Mapping[str, int], failed: list[BaseException]
) -> None:
    """Every child serves, the gateway answers, and every replica of each stage holds some
    of its partitions (so the first turns wait for no take-over)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(base_url=running.url, timeout=2) as http:
        while True:
            if failed:
                raise RuntimeError(f"{failed[0]}\n" + "\n".join(running.log))
            if time.monotonic() > deadline:
                raise RuntimeError("the stages did not start:\n" + "\n".join(running.log))
            await asyncio.sleep(0.3)
            if not running.supervisor.settled():
                continue
            if not await answers(http):
                continue
            if all([await holders(running, stage) == count for stage, count in replicas.items()
                    if stage != "gateway"]):  # fmt: skip
                return


async def answers(http: httpx.AsyncClient, url: str = "/api/status") -> bool:
    try:
        return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def holders(running: Running, stage: str) -> int:
    """How many replicas hold the stage's partitions (0 while any partition is free)."""
    held = set()
    for partition in range(running.bus.partitions):
        token = cast(bytes | None, await running.client.get(lease_key(stage, partition)))
        if token is None:
            return 0
        held.add(token.decode().split("#", 1)[0])
    return len(held)


@asynccontextmanager
async def stages(
    bus: BusSettings, backend: Backend, replicas: int, voice: bool, plan: Plan,
    log_file: Path | None = None,
) -> AsyncIterator[Running]:  # fmt: skip
    """The stages, serving and watched. log_file: every line they print goes there too."""
    counts = {"policy": replicas, "tts": replicas, "gateway": 1} | ({"asr": 1} if voice else {})
    port = free_port()
    commands, child_env = stage_children(counts)
    running_log: deque[str] = deque(maxlen=300)
    kept = log_file.open("a", encoding="utf-8") if log_file is not None else None

    def write(name: str, line: str) -> None:
        running_log.append(f"{name} | {line}")
        if kept is not None:
            kept.write(f"{name} | {line}\n")

    supervisor = Supervisor(
        commands, stage_env(bus, backend, port, plan.max_tokens), write,
        child_env=child_env, spares=False,
    )  # fmt: skip
    client = Redis.from_url(bus.redis_url or "")
    failed: list[BaseException] = []
    supervisor.start()
    stop = supervised(supervisor, failed)
    watcher: asyncio.Task[None] | None = None
    try:

        def pid_of(name: str) -> Callable[[], int | None]:
            def find() -> int | None:
                process = supervisor.children[name].process
                return process.pid if process is not None and process.poll() is None else None

            return find

        pids: dict[str, Callable[[], int | None]] = {name: pid_of(name) for name in commands}
        if (found := await redis_pid(client)) is not None:
            pids["redis"] = lambda: found
        if (server := backend.server_pid) is not None:
            pids["llm-server"] = lambda: server
        watch = BusWatch(client, bus.partitions, bus.max_message_bytes)
        running = Running(
            bus, client, f"http://127.0.0.1:{port}", supervisor, watch, Processes(pids),
            Backlog(client, input_streams([s for s in counts if s != "gateway"], bus.partitions)),
            Slots(backend.slots_url), running_log,
        )  # fmt: skip
        await wait_ready(running, counts, failed)
        await watch.start()
        watcher = asyncio.create_task(watch.run(), name="bus-watch")
        yield running
        if failed:
            raise RuntimeError(f"{failed[0]}\n" + "\n".join(running_log))
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        stop.set()
        await asyncio.to_thread(supervisor.stop)
        await client.aclose()
        if kept is not None:
            kept.close()


# --- the cases ----------------------------------------------------------------------------


async def chat_turn(http: httpx.AsyncClient, run: Running, session: str, text: str) -> TurnResult:
    turn = TurnResult(session, sent_at=time.time())
    answer = await http.post("/api/chat", json={"text": text, "session": session,
                                                "author": "viewer"})  # fmt: skip
    if answer.status_code != 200:
        turn.status = f"HTTP {answer.status_code}: {answer.text[:200]}"
        return turn
    turn.turn_id = answer.json()["turn_id"]
    reply = run.watch.reply(turn.turn_id)
    await reply.done.wait()
    turn.done_at = reply.final_at or time.time()
    turn.reply = reply.text
    if reply.first_audio_at is None:
        turn.status = "no audio in the reply"
    else:
        turn.first_audio_ms = (reply.first_audio_at - turn.sent_at) * 1000
    return turn


async def dialogue_turn(http: httpx.AsyncClient, player: str, text: str) -> TurnResult:
    turn = TurnResult(f"{NPC}:{player}", sent_at=time.time())
    began = time.monotonic()
    body = {"npc": NPC, "player": player, "text": text}
    async with http.stream("POST", "/api/dialogue/stream", json=body) as response:
        if response.status_code != 200:
            turn.status = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            return turn
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
                continue
            if not line.startswith("data:"):
                continue
            data = json.loads(line.removeprefix("data:"))
            if event == "sentence" and math.isnan(turn.first_audio_ms):
                turn.first_audio_ms = (time.monotonic() - began) * 1000
            elif event == "final":
                turn.done_at, turn.turn_id, turn.reply = time.time(), data["turn_id"], data["text"]
                if data["status"] != "ok" or math.isnan(turn.first_audio_ms):
                    turn.status = f"reply {data['status']}, {data['sentences']} sentences"
                return turn
            elif event == "error":
                turn.turn_id, turn.status = data["turn_id"], f"error: {data['code']}"
                return turn
    turn.status = "the stream ended without a final event"
    return turn


async def voice_turn(run: Running, ws_url: str, session: str, wav: Path) -> TurnResult:
    turn = TurnResult(session)
    url = f"{ws_url}/ws/audio?session={session}&rate=16000"
    async with connect(url, max_size=1 << 22, open_timeout=60) as socket:
        ready = json.loads(await socket.recv())
        if ready.get("type") != "ready":
            turn.status = f"/ws/audio: {ready}"
            return turn
        first_block: list[float] = []
        audio_came = asyncio.Event()

        async def listen() -> None:
            async for message in socket:
                if isinstance(message, bytes) and not first_block:
                    first_block.append(time.time())
                    audio_came.set()

        listening = asyncio.create_task(listen())
        try:
            await send_audio(socket, FileSource(wav))
            heard = await run.watch.first_heard(session)
            turn.turn_id = heard.turn_id
            turn.sent_at = heard.speech_end_at or float("nan")
            reply = run.watch.reply(heard.turn_id)
            await reply.done.wait()
            turn.done_at, turn.reply = reply.final_at or time.time(), reply.text
            if reply.first_audio_at is None:
                turn.status = "no audio in the reply"
                return turn
            turn.first_audio_ms = (reply.first_audio_at - turn.sent_at) * 1000
            # The gateway sends the audio as it should play: the first block is there soon.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(audio_came.wait(), 10)
            if first_block:
                turn.client_first_block_ms = (first_block[0] - turn.sent_at) * 1000
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
    return turn


def take_from(
    take: Callable[[str, int], Awaitable[TurnResult]], name: str, first_line: int, turn: int
) -> Awaitable[TurnResult]:
    """Turn `turn` of the session `name`: the lines go on from the session's first one."""
    return take(name, first_line + turn)


async def session(
    turns: int, take: Callable[[int], Awaitable[TurnResult]], deadline: float, name: str
) -> list[TurnResult]:
    """A session's turns one after the other, each given up at the case's deadline."""
    done: list[TurnResult] = []
    for number in range(turns):
        try:
            async with asyncio.timeout_at(deadline):
                done.append(await take(number))
        except TimeoutError:
            done.append(TurnResult(name, status="no reply before the case's deadline"))
            break
        except Exception as exc:  # one failed session is reported, the others go on
            done.append(TurnResult(name, status=f"{type(exc).__name__}: {exc}"[:300]))
            break
    return done


async def measured(
    run: Running, kind: str, n: int, sessions: Sequence[Awaitable[list[TurnResult]]]
) -> CaseResult:
    """Runs the sessions at once while sampling what the processes use and what waits in
    the stages; then waits for the stages to go idle."""
    case = CaseResult(kind, n)
    run.processes.start()
    run.backlog.reset()
    run.slots.most = 0
    restarts = run.restarts()
    stop = asyncio.Event()

    async def sample() -> None:
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                run.processes.sample()
                await run.backlog.sample()
                await run.slots.sample(http)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SAMPLE_S)

    sampler = asyncio.create_task(sample())
    case.started_at = time.time()
    try:
        for found in await asyncio.gather(*sessions):
            case.turns += found
        case.settled = await run.backlog.settle(SETTLE_TIMEOUT_S)
    finally:
        stop.set()
        await sampler
    case.processes = run.processes.finish()
    case.backlog = dict(run.backlog.most)
    case.slots_at_once = run.slots.most if run.slots.url else None
    case.restarts = run.restarts() - restarts
    made = await generations(
        run.client, run.bus.partitions, run.bus.max_message_bytes,
        {t.turn_id for t in case.turns if t.turn_id}, case.started_at - 1,
    )  # fmt: skip
    for turn in case.turns:
        if turn.turn_id in made:
            turn.policy_status = made[turn.turn_id].status
    case.generations_at_once = overlapping(
        (g.started_at, g.ended_at) for g in made.values() if g.ended_at is not None
    )
    return case


def turn_taker(
    kind: str, http: httpx.AsyncClient, run: Running, wav: Path | None
) -> Callable[[str, int], Awaitable[TurnResult]]:
    """kind -> (session name, line number) -> one turn of that kind."""
    if kind == "chat":
        return lambda name, k: chat_turn(http, run, name, CHAT_LINES[k % len(CHAT_LINES)])
    if kind == "dialogue":
        return lambda name, k: dialogue_turn(http, name, NPC_LINES[k % len(NPC_LINES)])
    if wav is None:
        raise ValueError("voice cases need the question's WAV")
    ws_url = run.url.replace("http://", "ws://")
    return lambda name, k: voice_turn(run, ws_url, name, wav)


async def run_cases(
    run: Running, plan: Plan, wav: Path | None, nonce: str, say: Say
) -> list[CaseResult]:
    """Each kind of case: one warm-up turn (not counted: the persona's prompt into the
    model's cache, asr's first utterance), then its sizes, smallest (the baseline) first."""
    cases: list[CaseResult] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=run.url, timeout=None, limits=limits) as http:
        for kind, sizes in (("chat", plan.chat), ("dialogue", plan.dialogue),
                            ("voice", plan.voice)):  # fmt: skip
            if not sizes:
                continue
            take = turn_taker(kind, http, run, wav)
            # A voice session is one socket and one utterance.
            turns = 1 if kind == "voice" else plan.turns
            say(f"  {kind}: a warm-up turn (not counted)")
            async with asyncio.timeout(plan.case_timeout_s + plan.turn_timeout_s):
                await take(f"{kind[0]}w-{nonce}", 0)
            await run.backlog.settle(SETTLE_TIMEOUT_S)
            for n in sizes:
                say(f"  {kind}: {n} session(s) x {turns} turn(s)")

                deadline = asyncio.get_running_loop().time() + (
                    plan.case_timeout_s + plan.turn_timeout_s * n * turns
                )
                names = [f"{kind[0]}{n}-{k}-{nonce}" for k in range(n)]
                sessions = [
                    session(turns, partial(take_from, take, name, k), deadline, name)
                    for k, name in enumerate(names)
                ]
                cases.append(await measured(run, kind, n, sessions))
    return cases


async def run_config(
    bus: BusSettings, backend: Backend, replicas: int, plan: Plan, say: Say = progress,
    logs: Path | None = None,
) -> ConfigResult:  # fmt: skip
    """One set of stages for this backend and replica count, every case of the plan.
    logs: a folder to keep the stages' output in."""
    result = ConfigResult(backend.name, replicas, backend.slots)
    nonce = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="load-") as scratch:
        wav = question_wavs(Path(scratch))[0] if plan.voice else None
        began = time.monotonic()
        say(f"{backend.name}, policy and tts x{replicas}: starting the stages ...")
        log_file = None
        if logs is not None:
            log_file = logs / f"{backend.name.replace(': ', '-')}-x{replicas}.log"
        async with stages(bus, backend, replicas, bool(plan.voice), plan, log_file) as run:
            result.startup_s = round(time.monotonic() - began, 1)
            say(f"  ready after {result.startup_s} s")
            try:
                result.cases = await run_cases(run, plan, wav, nonce, say)
            except Exception:
                say("\n".join(run.log))
                raise
        result.seconds = round(time.monotonic() - began, 1)
        result.load_average = [round(x, 2) for x in os.getloadavg()]
    return result


# --- the whole run --------------------------------------------------------------------------


def machine_load() -> dict[str, Any]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"uptime": uptime, "load_average": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count()}  # fmt: skip


async def bench(opts: argparse.Namespace, plan: Plan) -> None:
    before = machine_load()
    progress(f"machine before: {before['uptime']}")
    configs: list[ConfigResult] = []
    began = time.monotonic()
    async with AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-bench-")))
        url = os.environ.get("REDIS_URL") or stack.enter_context(EmbeddedRedis()).url
        client = Redis.from_url(url)
        stack.push_async_callback(client.aclose)
        if size := await client.dbsize():
            raise SystemExit(f"{url} holds {size} keys: point REDIS_URL at an empty database")
        bus = load_bus_settings(redis_url=url)
        for name in opts.backends:
            async with AsyncExitStack() as server:
                if name == "embedded":
                    backend = EMBEDDED
                else:
                    binary = find_llama_server(opts.llama_server)
                    if name == "openai":
                        name = "llama-server" if binary else "llama-cpp-python"
                    backend = await server.enter_async_context(
                        openai_server(
                            name,
                            opts.slots,
                            binary,
                            opts.logs or folder,
                            progress,
                            opts.server_threads,
                        )
                    )
                for replicas in plan.replicas:
                    configs.append(await run_config(bus, backend, replicas, plan, logs=opts.logs))
    after = machine_load()
    print(markdown(configs))
    print()
    print(summary(configs))
    if failed := failures(configs):
        print("\nturns without a reply:\n" + "\n".join(failed))
    print(f"\nmachine before: {before['uptime']}\nmachine after:  {after['uptime']}\n"
          f"{time.monotonic() - began:.0f} s in all")  # fmt: skip
    if opts.out:
        document = as_json(
            configs,
            plan=plan.__dict__,
            machine_before=before,
            machine_after=after,
            seconds=round(time.monotonic() - began, 1),
        )
        await asyncio.to_thread(Path(opts.out).write_text, json.dumps(document, indent=2) + "\n")


def numbers(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="chat and dialogue N=1,2, voice M=1, one replica: a test run",
    )
    parser.add_argument("--out", metavar="PATH", help="write the figures here as JSON")
    parser.add_argument(
        "--backends",
        default=None,
        help="embedded, openai (llama-server when found, else llama-cpp-python), "
        "llama-server, llama-cpp-python; comma-separated (default embedded,openai; "
        "quick: embedded)",
    )
    parser.add_argument("--replicas", type=numbers, help="policy and tts replicas (1,2)")
    parser.add_argument("--chat", type=numbers, help="chat sessions per case (1,5,20,50)")
    parser.add_argument("--dialogue", type=numbers, help="NPC conversations (1,5,20,50)")
    parser.add_argument("--voice", type=numbers, help="voice sessions (1,2,4)")
    parser.add_argument("--turns", type=int, help="turns per chat/NPC session (1)")
    parser.add_argument("--max-tokens", type=int, help="longest reply (32)")
    parser.add_argument("--llama-server", metavar="PATH", help="llama.cpp's llama-server binary")
    parser.add_argument("--slots", type=int, default=4, help="llama-server --parallel (4)")
    parser.add_argument("--server-threads", type=int, default=2, help="the LLM server's (2)")
    parser.add_argument("--logs", type=Path, help="keep the stages' output in this folder")
    opts = parser.parse_args()  # fmt: skip
    plan = QUICK if opts.quick else Plan()
    given = {
        "chat": opts.chat,
        "dialogue": opts.dialogue,
        "voice": opts.voice,
        "replicas": opts.replicas,
        "turns": opts.turns,
        "max_tokens": opts.max_tokens,
    }
    plan = replace(plan, **{k: v for k, v in given.items() if v is not None})  # fmt: skip
    chosen = opts.backends or ("embedded" if opts.quick else "embedded,openai")
    opts.backends = [b.strip() for b in chosen.split(",") if b.strip()]
    if unknown := set(opts.backends) - {"embedded", "openai", *SERVERS}:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    if opts.logs:
        opts.logs.mkdir(parents=True, exist_ok=True)
    asyncio.run(bench(opts, plan))


if __name__ == "__main__":
    main()
