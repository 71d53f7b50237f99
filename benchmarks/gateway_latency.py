"""What the HTTP/WebSocket gateway adds: NPC dialogue over SSE, its chat call, /ws/events fan-out.

    python -m benchmarks.gateway_latency [--quick] [--json PATH] [--parts overhead,fanout,dialogue]

Three parts, each with its baseline measured in the same run, on a flushed database:

- overhead (no LLM): `POST /api/chat` round trips (HTTP to the chat.message entry in Redis,
  answered with its entry id) against `Producer.publish` of the same message, alternately,
  on one keep-alive connection; and, to show what HTTP alone costs, GETs of a path that
  does nothing (a 404). The gateway runs in this process (StageRuntime).
- fanout: the direct path first: one raw redis-py XREAD loop (COUNT 200, BLOCK, from the
  streams' ends, as the gateway's tail reads) in a child process, while this process
  publishes N chat messages at a fixed rate with a Producer; then the gateway path:
  `marionette run gateway` in a child process and C WebSocket clients (`websockets`) on
  `/ws/events?topics=chat.message` in another, the same N messages at the same rate.
  Every reader notes when each message arrives (time.time_ns() in every process, one
  clock); the delay is publish call -> receipt. A client only stores what it gets while
  the run lasts and decodes it afterwards.
- dialogue (the bundled LLM): `marionette run policy` in a child process (temperature 0,
  fixed seed), the gateway in this process, and the same chat lines to the NPC persona
  taken alternately through (a) `POST /api/dialogue/stream` (SSE): request -> first
  `sentence` event; (b) Producer.publish of the chat.message the route would publish,
  then XREAD of the session's policy.token stream, cut into sentences as the route cuts
  them (the tts splitter after an ExpressionFilter): publish -> first complete sentence.
  Every turn has a fresh session (`<npc>:<player>`), so memory is the same for both
  paths; which path goes first alternates line by line, so llama.cpp's prompt cache
  favours neither; each turn runs to its final token before the next starts. One
  warm-up turn (over HTTP) is not counted. The LLM's time varies from turn to turn by
  far more than the gateway adds, so each turn is also taken apart by a direct reader
  of its session (chat.message and policy.token) that watches it: in (-> the chat entry),
  policy (-> the first sentence on the bus), out (-> the client); the gateway's share
  of an HTTP turn is its in-hop above the bus path's plus its out-hop.

Prints figures; asserts nothing. Without REDIS_URL it starts an embedded server. A REDIS_URL
must name an empty database: it is flushed before each part.
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
from array import array
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import httpx
import websockets
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from benchmarks.figures import nan_to_none, stop_child
from contracts import ChatMessage, PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from services.bus import BusSettings, Producer, StageRuntime, load_bus_settings
from services.bus.ownership import lease_key
from services.bus.partitions import stream_for, streams_of
from services.bus.redis_server import EmbeddedRedis, free_port
from services.bus.wire import StreamEntry, decode_entry
from services.gateway.stage import GatewayStage
from services.policy.expressions import ExpressionFilter
from services.settings import load_settings
from services.supervisor import READY_FD_ENV
from services.tts.settings import TtsSettings
from services.tts.splitter import SentenceSplitter

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_KEY, PROGRESS_KEY, STOP_KEY = "bench:ready", "bench:progress", "bench:stop"
NPC = "grumpy"
LINES = (
    "Hello there! What do you sell in this shop?",
    "I am looking for a sword. Do you have one?",
    "Have you seen a dragon around here lately?",
    "Can you tell me the way to the old castle?",
    "Why are you always in such a bad mood?",
    "Do you know a good place to sleep tonight?",
    "What is the best thing you ever made?",
    "I found this strange ring in the forest. Is it valuable?",
)
FANOUT_SESSIONS = 8  # the published chat spreads over this many sessions, so partitions
NO_LIMIT = str(10**9)  # the gateway's per-client rate limits, out of the way
Rows = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
PARTS = ("overhead", "fanout", "dialogue")


# --- figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Milliseconds: p50, p95, p99, mean and max of a sample."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> "Spread":
        ordered = sorted(values_ms)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return cls(len(ordered), rank(0.5), rank(0.95), rank(0.99),
                   statistics.fmean(ordered), ordered[-1])  # fmt: skip


@dataclass(frozen=True)
class OverheadResult:
    http: Spread
    bus: Spread
    floor: Spread
    """HTTP round trips to a path that does nothing (a 404): the cost of HTTP alone."""
    entries: int
    """chat.message entries found in Redis afterwards (should be 2 x (samples + warm-up))."""

    @property
    def added_p50_ms(self) -> float:
        return self.http.p50 - self.bus.p50


@dataclass(frozen=True)
class FanoutResult:
    path: str  # "direct" (one raw XREAD loop) or "gateway" (WebSocket clients)
    readers: int
    messages: int
    publish_rate: float  # achieved, msg/s
    delivered: int
    delivered_per_s: float  # summed over readers: deliveries / (first publish -> last receipt)
    delay: Spread  # publish call -> receipt, every (reader, message)
    skew: Spread  # per message: first reader's receipt -> last reader's
    lost: int  # (reader, message) pairs never received
    duplicates: int


@dataclass(frozen=True)
class Turn:
    """One chat line's turn; ms from just before the request (http) or publish (bus)."""

    path: str  # "http" or "bus"
    line: int
    first_ms: float  # -> the first sentence at the client (http: SSE; bus: the direct reader)
    total_ms: float  # -> the reply's end at the client
    chat_ms: float  # -> the chat.message entry, seen by a direct reader of the session
    bus_first_ms: float  # -> its first sentence complete on policy.token, seen by that reader
    sentence: str
    status: str
    route_ms: float | None = None  # http: the route's own latency_ms of that sentence

    @property
    def policy_ms(self) -> float:
        """chat.message entry -> first sentence on policy.token: the LLM's share."""
        return self.bus_first_ms - self.chat_ms

    @property
    def out_ms(self) -> float:
        """First sentence on policy.token -> at the client (0 on the bus path)."""
        return self.first_ms - self.bus_first_ms


PIECES: dict[str, str] = {
    "chat_ms": "in: -> chat.message entry",
    "policy_ms": "policy: entry -> 1st sentence on bus",
    "out_ms": "out: bus -> client",
    "first_ms": "total: -> 1st sentence at client",
}


@dataclass
class DialogueResult:
    turns: list[Turn] = field(default_factory=list)
    max_tokens: int = 0

    def of(self, path: str, piece: str = "first_ms") -> list[float]:
        found = [getattr(t, piece) for t in self.turns if t.path == path]
        return [value for value in found if not math.isnan(value)]

    def first(self, path: str) -> list[float]:
        return self.of(path)

    def paired_differences(self) -> list[float]:
        by_line: dict[int, dict[str, float]] = {}
        for turn in self.turns:
            by_line.setdefault(turn.line, {})[turn.path] = turn.first_ms
        return [pair["http"] - pair["bus"] for pair in by_line.values()
                if len(pair) == 2 and not any(map(math.isnan, pair.values()))]  # fmt: skip

    def same_turn_added(self) -> list[float]:
        """Per HTTP turn, free of the LLM's variation: its in-hop above the bus path's
        median in-hop, plus its out-hop."""
        bus_in = Spread.of(self.of("bus", "chat_ms")).p50
        return [t.chat_ms - bus_in + t.out_ms for t in self.turns if t.path == "http"
                and not math.isnan(t.out_ms + t.chat_ms)]  # fmt: skip


# --- processes ----------------------------------------------------------------------------


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set these environment variables (what load_settings reads) for the block."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read()[-3000:].decode(errors="replace")


def child_env(bus: BusSettings, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "REDIS_URL": bus.redis_url or "",
        "MARIONETTE_PARTITIONS": str(bus.partitions),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        **extra,
    }  # fmt: skip


@asynccontextmanager
async def stage_process(
    name: str, bus: BusSettings, env: dict[str, str], start_s: float = 180
) -> AsyncIterator[Process]:
    """`marionette run NAME` in a child process (in a scratch directory, so its span store
    stays out of the way), ready once it says so on the supervisor's pipe."""
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as scratch:
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services", "run", name, cwd=scratch,
                env=child_env(bus, **env, **{READY_FD_ENV: str(write_end)}),
                stdout=log, stderr=asyncio.subprocess.STDOUT, pass_fds=(write_end,),
            )  # fmt: skip
        finally:
            os.close(write_end)
        try:
            # The pipe ends (b"") when the child exits without saying it is ready.
            said = b""
            async with asyncio.timeout(start_s):
                while b"ready" not in said:
                    piece = await asyncio.to_thread(os.read, read_end, 64)
                    if not piece:
                        await child.wait()
                        raise RuntimeError(
                            f"`marionette run {name}` exited with {child.returncode}:\n{tail(log)}"
                        )
                    said += piece
            yield child
            if child.returncode is not None:
                raise RuntimeError(f"{name} died during the run:\n{tail(log)}")
        finally:
            await stop_child(child, grace_s=15)
            os.close(read_end)


@asynccontextmanager
async def gateway_here(bus: BusSettings) -> AsyncIterator[str]:
    """The gateway in this process, on a free port, without rate limits; its URL."""
    env = {
        "MARIONETTE_GATEWAY_PORT": "0",
        "MARIONETTE_GATEWAY_CHAT_PER_MINUTE": NO_LIMIT,
        "MARIONETTE_GATEWAY_DIALOGUE_PER_MINUTE": NO_LIMIT,
        "MARIONETTE_GATEWAY_DIALOGUE_TIMEOUT_S": "300",  # a busy machine's slow turn still counts
    }
    with environment(**env):
        async with StageRuntime(GatewayStage, bus) as runtime:
            await runtime.stage.listening.wait()
            yield runtime.stage.url


async def flush(bus: BusSettings) -> None:
    client = Redis.from_url(bus.redis_url or "")
    await client.flushdb()
    await client.aclose()


async def paced(count: int, rate: float) -> AsyncIterator[int]:
    """0..count-1 on a fixed schedule (against the start, so a slow step does not lower
    the rate)."""
    start = time.perf_counter()
    for k in range(count):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield k


# --- part 1: overhead without the LLM -----------------------------------------------------


def overhead_chat(session: str, seq: int, turn: str) -> ChatMessage:
    return ChatMessage(
        session_id=session, turn_id=turn, seq=seq, platform="control_panel",
        author="operator", text=f"hello streamer, this is chat message number {seq}!",
    )  # fmt: skip


async def chat_over_http(http: httpx.AsyncClient, message: ChatMessage) -> float:
    """POST /api/chat of this message's fields: ms until the answer (with its entry id)."""
    body = {"text": message.text, "author": message.author, "session": message.session_id,
            "platform": message.platform}  # fmt: skip
    start = time.perf_counter_ns()
    answer = await http.post("/api/chat", json=body)
    took = time.perf_counter_ns() - start
    if answer.status_code != 200 or not answer.json()["published"][0]["entry_id"]:
        raise RuntimeError(f"POST /api/chat: {answer.status_code} {answer.text}")
    return took / 1e6


async def chat_over_bus(producer: Producer, message: ChatMessage) -> float:
    """Producer.publish: ms until it returns the entry id."""
    start = time.perf_counter_ns()
    entry = await producer.publish(message)
    took = time.perf_counter_ns() - start
    if not entry:
        raise RuntimeError("Producer.publish returned no entry id")
    return took / 1e6


async def overhead(bus: BusSettings, samples: int, warmup: int = 20) -> OverheadResult:
    """POST /api/chat round trips against Producer.publish of the same message."""
    await flush(bus)
    http_ms: list[float] = []
    bus_ms: list[float] = []
    async with (
        gateway_here(bus) as url,
        Producer(bus, "bench-overhead", [CHAT_MESSAGE]) as producer,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        for k in range(warmup + samples):
            message = overhead_chat(f"oh-{k % FANOUT_SESSIONS}", k, f"bench-oh-{k}")
            # Alternated, so a slow moment of the machine hits both paths alike.
            if k % 2 == 0:
                took_http = await chat_over_http(http, message)
                took_bus = await chat_over_bus(producer, message)
            else:
                took_bus = await chat_over_bus(producer, message)
                took_http = await chat_over_http(http, message)
            if k >= warmup:
                http_ms.append(took_http)
                bus_ms.append(took_bus)
        floor_ms: list[float] = []
        for k in range(warmup + min(samples, 100)):
            start = time.perf_counter_ns()
            await http.get("/api/nothing-here")
            if k >= warmup:
                floor_ms.append((time.perf_counter_ns() - start) / 1e6)
        client = Redis.from_url(bus.redis_url or "")
        entries = sum([await client.xlen(s) for s in streams_of(CHAT_MESSAGE, bus.partitions)])
        await client.aclose()
    return OverheadResult(Spread.of(http_ms), Spread.of(bus_ms), Spread.of(floor_ms), entries)


# --- part 2: /ws/events fan-out -----------------------------------------------------------


async def read_direct(url: str, partitions: int, total: int, stop: asyncio.Event) -> list[Any]:
    """One raw XREAD loop on every chat.message stream: [(receipt ns, fields)]."""
    client = Redis.from_url(url)
    streams = streams_of(CHAT_MESSAGE, partitions)
    positions: dict[str, bytes | str] = {}
    for stream in streams:
        last = cast(list[tuple[bytes, Any]], await client.xrevrange(stream, count=1))
        positions[stream] = last[0][0] if last else "0-0"
    got: list[Any] = []
    reader = Redis.from_url(url)  # its own connection: progress reports never hold it up

    async def report() -> None:
        while True:
            await client.set(f"{PROGRESS_KEY}:0", len(got))
            await asyncio.sleep(0.1)

    await client.incr(READY_KEY)
    reporting = asyncio.create_task(report())
    try:
        while len(got) < total and not stop.is_set():
            rows = cast(Rows, await reader.xread(cast(Any, positions), block=100, count=200) or [])
            now = time.time_ns()
            for raw_stream, entries in rows:
                for entry_id, fields in entries:
                    positions[raw_stream.decode()] = entry_id
                    got.append((now, raw_stream.decode(), entry_id, fields))
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)
        await client.set(f"{PROGRESS_KEY}:0", len(got))
        await client.aclose()
        await reader.aclose()
    return [got]


async def read_websockets(
    url: str, ws_url: str, clients: int, total: int, stop: asyncio.Event
) -> list[Any]:
    """`clients` WebSockets on /ws/events: per client [(receipt ns, text)]."""
    client = Redis.from_url(url)
    got: list[list[tuple[int, str]]] = [[] for _ in range(clients)]

    async def one(n: int) -> None:
        async with websockets.connect(f"{ws_url}/ws/events?topics=chat.message",
                                      max_size=None, open_timeout=60,
                                      close_timeout=5) as ws:  # fmt: skip
            hello = json.loads(await ws.recv())
            if not hello.get("ready"):
                raise RuntimeError(f"/ws/events refused: {hello}")
            await client.incr(READY_KEY)
            mine = got[n]
            while len(mine) < total:
                text = await ws.recv()
                mine.append((time.time_ns(), cast(str, text)))

    async def report() -> None:
        while True:
            await client.set(f"{PROGRESS_KEY}:0", sum(map(len, got)))
            await asyncio.sleep(0.1)

    reporting = asyncio.create_task(report())
    readers = [asyncio.create_task(one(n)) for n in range(clients)]
    stopping = asyncio.create_task(stop.wait())
    waits: list[asyncio.Future[Any]] = [stopping, asyncio.gather(*readers)]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a client that failed fails the run
    finally:
        for task in (reporting, stopping, *readers):
            task.cancel()
        await asyncio.gather(reporting, stopping, *readers, return_exceptions=True)
        await client.set(f"{PROGRESS_KEY}:0", sum(map(len, got)))
        await client.aclose()
    return got


def receipts(role: str, got: list[Any], total: int, partitions: int, max_bytes: int) -> bytes:
    """Per reader, receipt ns by seq (0: never), then the duplicate count: int64s."""
    out = array("q")
    duplicates = 0
    for mine in got:
        times = array("q", [0]) * total
        for item in mine:
            if role == "direct":
                received, stream, entry_id, fields = item
                seq = decode_entry(StreamEntry(stream, entry_id, fields), CHAT_MESSAGE,
                                   max_bytes).envelope.seq  # fmt: skip
            else:
                received, text = item
                seq = json.loads(text)["message"]["seq"]
            if 0 <= seq < total:
                duplicates += bool(times[seq])
                times[seq] = times[seq] or received
        out.extend(times)
    out.append(duplicates)
    return out.tobytes()


async def reader_main(opts: argparse.Namespace) -> None:
    """A fan-out reader process: reads until it has everything, or SIGTERM, or STOP_KEY."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    control = Redis.from_url(opts.redis)

    async def watch() -> None:
        while not stop.is_set():
            if await control.exists(STOP_KEY):
                stop.set()
            await asyncio.sleep(0.1)

    watching = asyncio.create_task(watch())
    if opts.role == "direct":
        got = await read_direct(opts.redis, opts.partitions, opts.total, stop)
    else:
        got = await read_websockets(opts.redis, opts.ws, opts.clients, opts.total, stop)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    await control.aclose()
    max_bytes = load_bus_settings(redis_url=opts.redis).max_message_bytes
    found = receipts(opts.role, got, opts.total, opts.partitions, max_bytes)
    await asyncio.to_thread(Path(opts.out).write_bytes, found)


async def run_readers(
    bus: BusSettings, role: str, readers: int, messages: int, rate: float, ws_url: str = ""
) -> FanoutResult:
    """Start the reader process, publish `messages` at `rate` once every reader is ready,
    wait for every copy (or 20 s without progress), and work out the figures."""
    url = bus.redis_url or ""
    client = Redis.from_url(url)
    await client.delete(READY_KEY, STOP_KEY, f"{PROGRESS_KEY}:0")
    sent = array("q", [0]) * messages
    expected = readers * messages
    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryFile() as log:
        out = Path(scratch) / "receipts"
        args = ["--role", role, "--redis", url, "--partitions", str(bus.partitions),
                "--total", str(messages), "--clients", str(readers), "--ws", ws_url,
                "--out", str(out)]  # fmt: skip
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.gateway_latency", *args, cwd=REPO_ROOT,
            env=child_env(bus), stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while int(await client.get(READY_KEY) or 0) < readers:
                if child.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {role} readers did not get ready:\n{tail(log)}")
                await asyncio.sleep(0.05)
            async with Producer(bus, "bench-fanout", [CHAT_MESSAGE]) as producer:
                async for k in paced(messages, rate):
                    message = ChatMessage(
                        session_id=f"fan-{k % FANOUT_SESSIONS}", turn_id="bench-fan", seq=k,
                        platform="cli", author="viewer42",
                        text=f"hello streamer, this is chat message number {k}!",
                    )  # fmt: skip
                    sent[k] = time.time_ns()
                    await producer.publish(message)
            published = time.time_ns()
            seen, moved = -1, time.monotonic()
            while child.returncode is None:
                count = int(await client.get(f"{PROGRESS_KEY}:0") or 0)
                if count >= expected:
                    break
                if count != seen:
                    seen, moved = count, time.monotonic()
                elif time.monotonic() - moved > 20:
                    await client.set(STOP_KEY, 1)  # give up on the rest: they count as lost
                    break
                await asyncio.sleep(0.05)
            try:
                await asyncio.wait_for(child.wait(), 60)
            except TimeoutError:
                raise RuntimeError(f"the {role} readers did not exit:\n{tail(log)}") from None
            if child.returncode:
                raise RuntimeError(f"the {role} readers exited with {child.returncode}:\n"
                                   f"{tail(log)}")  # fmt: skip
            raw = array("q")
            raw.frombytes(out.read_bytes())
        finally:
            await stop_child(child, grace_s=15)
            await client.aclose()
    duplicates = raw.pop()
    delays: list[float] = []
    skews: list[float] = []
    last_receipt = 0
    for k in range(messages):
        copies = [raw[r * messages + k] for r in range(readers)]
        got = [t for t in copies if t]
        delays += [(t - sent[k]) / 1e6 for t in got]
        if got:
            skews.append((max(got) - min(got)) / 1e6)
            last_receipt = max(last_receipt, max(got))
    delivered = len(delays)
    window = max(last_receipt or published, published) - sent[0]
    return FanoutResult(
        path=role if role == "direct" else "gateway", readers=readers, messages=messages,
        publish_rate=(messages - 1) / max((sent[-1] - sent[0]) / 1e9, 1e-9),
        delivered=delivered, delivered_per_s=delivered / max(window / 1e9, 1e-9),
        delay=Spread.of(delays), skew=Spread.of(skews), lost=expected - delivered,
        duplicates=duplicates,
    )  # fmt: skip


async def wait_for_http(url: str, child: Process) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/api/status")).status_code == 200:
                    return
            if child.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway at {url} does not answer")
            await asyncio.sleep(0.1)


async def fanout(
    bus: BusSettings, clients: int, messages: int, rate: float
) -> tuple[FanoutResult, FanoutResult]:
    """The direct reader, then the gateway's WebSocket clients, on the same messages."""
    await flush(bus)
    direct = await run_readers(bus, "direct", 1, messages, rate)
    await flush(bus)
    port = free_port()
    env = {"MARIONETTE_GATEWAY_PORT": str(port), "MARIONETTE_GATEWAY_HOST": "127.0.0.1"}
    async with stage_process("gateway", bus, env, start_s=60) as child:
        url = f"http://127.0.0.1:{port}"
        await wait_for_http(url, child)
        through = await run_readers(
            bus, "ws", clients, messages, rate, ws_url=url.replace("http://", "ws://")
        )
    return direct, through


# --- part 3: dialogue with the LLM --------------------------------------------------------


class SentenceCutter:
    """Tokens -> sentences, as the dialogue route cuts them (services.gateway.routes.dialogue)."""

    def __init__(self) -> None:
        tts = load_settings(TtsSettings)
        self.splitter = SentenceSplitter(tts.first_fragment_words, tts.max_unit_chars)
        self.tags = ExpressionFilter([])

    def cut(self, token: PolicyToken) -> list[str]:
        units = self.splitter.feed(self.tags.feed(token.text).text)
        if token.final:
            units += self.splitter.feed(self.tags.flush().text) + self.splitter.flush()
        return units


class SessionWatch:
    """A direct reader of one session's chat.message and policy.token streams, as a stage
    sees them: when its chat entry came, and when the reply's first sentence was complete
    (cut as the dialogue route cuts it) and its last token came. Times: perf_counter()."""

    def __init__(self, client: Redis, bus: BusSettings, session: str) -> None:
        self.client, self.bus, self.session = client, bus, session
        self.topics = {
            stream_for(t, session, bus.partitions): t for t in (CHAT_MESSAGE, POLICY_TOKEN)
        }
        self.positions: dict[str, bytes | str] = {}
        self.cutter = SentenceCutter()
        self.chat_at = self.first_at = math.nan
        self.sentence, self.status = "", "?"

    async def start(self) -> None:
        """From the streams' ends, taken before the chat goes out."""
        for stream in self.topics:
            last = cast(list[tuple[bytes, Any]], await self.client.xrevrange(stream, count=1))
            self.positions[stream] = last[0][0] if last else "0-0"

    async def run(self) -> float:
        """Until the reply's final token; when it came."""
        deadline = time.perf_counter() + 300
        while time.perf_counter() < deadline:
            reply = await self.client.xread(cast(Any, self.positions), block=500, count=200)
            now = time.perf_counter()
            for raw_stream, entries in cast(Rows, reply or []):
                stream = raw_stream.decode()
                for entry_id, fields in entries:
                    self.positions[stream] = entry_id
                    entry = StreamEntry(stream, entry_id, fields)
                    topic = self.topics[stream]
                    message = decode_entry(entry, topic, self.bus.max_message_bytes).envelope
                    if message.session_id != self.session:
                        continue  # another session of the same partition
                    if isinstance(message, ChatMessage) and math.isnan(self.chat_at):
                        self.chat_at = now
                    elif isinstance(message, PolicyToken):
                        units = self.cutter.cut(message)
                        if units and math.isnan(self.first_at):
                            self.first_at, self.sentence = now, units[0]
                        if message.final:
                            self.status = message.status or "?"
                            return now
        raise RuntimeError(f"no final token for session {self.session} within 300 s")


def since(start: float, at: float) -> float:
    return (at - start) * 1000


async def http_turn(
    http: httpx.AsyncClient, client: Redis, bus: BusSettings, line: int, player: str, text: str
) -> Turn:
    """POST /api/dialogue/stream: request -> first `sentence` event (a direct reader of the
    session watches the same turn meanwhile)."""
    watch = SessionWatch(client, bus, f"{NPC}:{player}")
    await watch.start()
    body = {"npc": NPC, "player": player, "text": text}
    first, total = math.nan, math.nan
    route_ms, event = None, ""
    watching: asyncio.Task[float] | None = None
    start = time.perf_counter()
    try:
        watching = asyncio.create_task(watch.run())
        async with http.stream("POST", "/api/dialogue/stream", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"dialogue: {response.status_code} {await response.aread()!r}")
            async for row in response.aiter_lines():
                if row.startswith("event:"):
                    event = row[len("event:") :].strip()
                elif row.startswith("data:"):
                    data = json.loads(row[len("data:") :])
                    if event == "sentence" and math.isnan(first):
                        first = since(start, time.perf_counter())
                        route_ms = float(data["latency_ms"])
                    elif event == "final":
                        total = since(start, time.perf_counter())
                        break
                    elif event == "error":
                        raise RuntimeError(f"dialogue error event: {data}")
        if math.isnan(total):
            raise RuntimeError("the dialogue stream ended without a final event")
        await asyncio.wait_for(watching, 60)
    finally:
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
    return Turn("http", line, first, total, since(start, watch.chat_at),
                since(start, watch.first_at), watch.sentence, watch.status, route_ms)  # fmt: skip


async def bus_turn(
    producer: Producer, client: Redis, bus: BusSettings, line: int, player: str, text: str
) -> Turn:
    """The chat the route would publish, published straight; publish -> its first sentence
    complete on policy.token, read back directly."""
    session = f"{NPC}:{player}"
    watch = SessionWatch(client, bus, session)
    await watch.start()
    message = ChatMessage(
        session_id=session, turn_id=f"bench-npc-{uuid.uuid4().hex[:16]}", seq=0,
        platform="gateway", author=player, text=text, persona=NPC,
    )  # fmt: skip
    start = time.perf_counter()
    await producer.publish(message)
    ended = await watch.run()
    first = since(start, watch.first_at)
    return Turn("bus", line, first, since(start, ended), since(start, watch.chat_at), first,
                watch.sentence, watch.status)  # fmt: skip


async def policy_leases(bus: BusSettings) -> None:
    """Until policy holds every partition (the route refuses a session nobody holds)."""
    client = Redis.from_url(bus.redis_url or "")
    try:
        for _ in range(600):
            held = [await client.exists(lease_key("policy", p)) for p in range(bus.partitions)]
            if all(held):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("policy did not take its partitions")
    finally:
        await client.aclose()


async def dialogue(bus: BusSettings, lines: int, max_tokens: int) -> DialogueResult:
    await flush(bus)
    result = DialogueResult(max_tokens=max_tokens)
    nonce = uuid.uuid4().hex[:6]
    began = time.monotonic()
    env = {
        "MARIONETTE_POLICY_TEMPERATURE": "0", "MARIONETTE_POLICY_SEED": "7",
        "MARIONETTE_POLICY_MAX_TOKENS": str(max_tokens),
    }  # fmt: skip
    async with (
        stage_process("policy", bus, env),
        gateway_here(bus) as url,
        Producer(bus, "bench-dialogue", [CHAT_MESSAGE]) as producer,
        httpx.AsyncClient(base_url=url, timeout=300) as http,
    ):
        await policy_leases(bus)
        print(f"  policy ready after {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
        client = Redis.from_url(bus.redis_url or "")
        try:
            # One warm-up turn, not counted: the model's first prompt, the route's first call.
            await http_turn(http, client, bus, -1, f"warmup{nonce}", LINES[-1])
            for line in range(lines):
                text = LINES[line % len(LINES)]
                # Fresh players, so fresh sessions and memories; same length either way.
                name = {path: f"p{line:02d}{path[0]}{nonce}" for path in ("http", "bus")}
                order = ("http", "bus") if line % 2 == 0 else ("bus", "http")
                for path in order:
                    print(f"  dialogue line {line}: {path}", file=sys.stderr, flush=True)
                    if path == "http":
                        taken = await http_turn(http, client, bus, line, name[path], text)
                    else:
                        taken = await bus_turn(producer, client, bus, line, name[path], text)
                    result.turns.append(taken)
        finally:
            await client.aclose()
    return result


# --- report -------------------------------------------------------------------------------


def ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"


def spread_cells(s: Spread, *names: str) -> list[str]:
    return [ms(getattr(s, name)) for name in names]


def print_report(figures: dict[str, Any], console: Console) -> None:
    said: list[str] = []
    if "dialogue" in figures:
        d: DialogueResult = figures["dialogue"]
        table = Table(
            title=f"Chat to first sentence, NPC {NPC!r} on the bundled LLM "
            f"(max_tokens {d.max_tokens}), {len(d.first('http'))} lines per path"
        )
        for name in ("path", "n", "p50 ms", "p95 ms", "mean ms", "whole reply mean ms"):
            table.add_column(name, justify="left" if name == "path" else "right")
        spreads = {path: Spread.of(d.first(path)) for path in ("http", "bus")}
        for path, label in (("http", "HTTP: POST /api/dialogue/stream -> 1st SSE sentence"),
                            ("bus", "bus: publish -> 1st sentence on policy.token")):  # fmt: skip
            s = spreads[path]
            totals = d.of(path, "total_ms")
            table.add_row(label, str(s.n), *spread_cells(s, "p50", "p95", "mean"),
                          ms(statistics.fmean(totals) if totals else math.nan))  # fmt: skip
        diffs = Spread.of(d.paired_differences())
        table.add_row(
            "gateway adds (http - bus)", "",
            ms(spreads["http"].p50 - spreads["bus"].p50),
            ms(spreads["http"].p95 - spreads["bus"].p95),
            ms(spreads["http"].mean - spreads["bus"].mean), "",
        )  # fmt: skip
        table.add_row("  paired by line (p50, max, mean)", str(diffs.n),
                      ms(diffs.p50), ms(diffs.max), ms(diffs.mean), "")  # fmt: skip
        route = [t.route_ms for t in d.turns if t.path == "http" and t.route_ms is not None]
        route_mean = ms(statistics.fmean(route)) if route else "-"
        table.caption = (
            "Same line over both paths, one after the other (order alternating), fresh "
            "sessions. These differences carry the LLM's turn-to-turn variation; the table "
            "below takes it out. The route's own latency_ms (from request arrival): mean "
            f"{route_mean} ms"
        )
        console.print(table)
        parts = Table(title="Where the time goes: p50 (mean) ms, a direct reader of each "
                      "session watching the same turn")  # fmt: skip
        parts.add_column("path")
        for label in PIECES.values():
            parts.add_column(label, justify="right")
        for path in ("http", "bus"):
            cells = []
            for piece in PIECES:
                spread = Spread.of(d.of(path, piece))
                cells.append(f"{ms(spread.p50)} ({ms(spread.mean)})")
            parts.add_row(path, *cells)
        added = Spread.of(d.same_turn_added())
        parts.caption = (
            "in: just before the request / publish -> the chat.message entry read by a direct "
            "XREAD reader; policy: -> the first sentence complete on policy.token, same reader; "
            "out: -> the SSE sentence event at the client. Gateway's share per HTTP turn, free "
            f"of the LLM: in - bus path's p50 in + out: p50 {ms(added.p50)}, mean "
            f"{ms(added.mean)}, max {ms(added.max)} ms"
        )
        console.print(parts)
        lines = Table(title="Turns (ms)")
        for name in ("line", "path", "in", "policy", "out", "1st sentence", "reply", "status",
                     "first sentence"):  # fmt: skip
            lines.add_column(name, justify="left" if name in ("path", "status", "first sentence")
                             else "right")  # fmt: skip
        for t in sorted(d.turns, key=lambda t: (t.line, t.path)):
            lines.add_row(str(t.line), t.path, ms(t.chat_ms), ms(t.policy_ms), ms(t.out_ms),
                          ms(t.first_ms), ms(t.total_ms), t.status, t.sentence[:36])  # fmt: skip
        console.print(lines)
        said.append(
            f"With the bundled LLM the first sentence of an NPC reply took p50 "
            f"{ms(spreads['http'].p50)} ms over HTTP/SSE and {ms(spreads['bus'].p50)} ms "
            f"straight on the bus (mean difference {ms(spreads['http'].mean - spreads['bus'].mean)}"
            f" ms, paired by line {ms(diffs.mean)} ms, both including the LLM's variation from "
            f"turn to turn); measured within the same turns, the gateway's share is p50 "
            f"{ms(added.p50)} ms (in {ms(Spread.of(d.of('http', 'chat_ms')).p50)} ms against "
            f"{ms(Spread.of(d.of('bus', 'chat_ms')).p50)} ms, out "
            f"{ms(Spread.of(d.of('http', 'out_ms')).p50)} ms) out of "
            f"{ms(spreads['http'].p50)} ms."
        )
    if "overhead" in figures:
        o: OverheadResult = figures["overhead"]
        table = Table(title=f"Gateway overhead without the LLM: chat.message entry in Redis, "
                      f"{o.http.n} samples per path")  # fmt: skip
        for name in ("path", "p50 ms", "p95 ms", "p99 ms", "mean ms", "max ms"):
            table.add_column(name, justify="left" if name == "path" else "right")
        table.add_row("HTTP: POST /api/chat round trip",
                      *spread_cells(o.http, "p50", "p95", "p99", "mean", "max"))  # fmt: skip
        table.add_row("bus: Producer.publish",
                      *spread_cells(o.bus, "p50", "p95", "p99", "mean", "max"))  # fmt: skip
        table.add_row("gateway adds", ms(o.http.p50 - o.bus.p50), ms(o.http.p95 - o.bus.p95),
                      ms(o.http.p99 - o.bus.p99), ms(o.http.mean - o.bus.mean), "")  # fmt: skip
        table.add_row(f"HTTP alone: GET of a 404 ({o.floor.n} samples)",
                      *spread_cells(o.floor, "p50", "p95", "p99", "mean", "max"))  # fmt: skip
        table.caption = (f"httpx, one keep-alive connection, gateway in this process; "
                         f"{o.entries} chat.message entries written")  # fmt: skip
        console.print(table)
        said.append(
            f"Without the LLM, a chat line costs {ms(o.http.p50)} ms through POST /api/chat "
            f"against {ms(o.bus.p50)} ms for a direct Producer.publish (p50; "
            f"+{ms(o.http.p50 - o.bus.p50)} ms), of which an HTTP round trip that does "
            f"nothing (a 404) takes {ms(o.floor.p50)} ms."
        )
    if "fanout" in figures:
        direct, gw = cast(tuple[FanoutResult, FanoutResult], figures["fanout"])
        table = Table(title=f"/ws/events fan-out: {gw.messages} chat messages at "
                      f"{gw.publish_rate:,.0f}/s, publish -> receipt")  # fmt: skip
        for name in ("path", "readers", "delivered msg/s", "p50 ms", "p99 ms", "max ms",
                     "skew p99 ms", "lost", "dup"):  # fmt: skip
            table.add_column(name, justify="left" if name == "path" else "right")
        for r, label in ((direct, "direct: raw XREAD loop"), (gw, "gateway: WebSocket clients")):
            table.add_row(label, str(r.readers), f"{r.delivered_per_s:,.0f}",
                          *spread_cells(r.delay, "p50", "p99", "max"), ms(r.skew.p99),
                          str(r.lost), str(r.duplicates))  # fmt: skip
        table.caption = (
            f"offered: {gw.readers} x {gw.publish_rate:,.0f} = {gw.readers * gw.publish_rate:,.0f}"
            " msg/s; msg/s: deliveries summed over readers / (first publish -> last receipt); "
            "skew: one message's first to last client; gateway = `marionette run gateway`, "
            "clients in one other process"
        )
        console.print(table)
        said.append(
            f"Fanned out to {gw.readers} WebSocket clients at {gw.publish_rate:,.0f} msg/s, "
            f"the gateway delivered {gw.delivered_per_s:,.0f} msg/s in all with p50 "
            f"{ms(gw.delay.p50)} / p99 {ms(gw.delay.p99)} ms from publish to receipt (a direct "
            f"XREAD reader: p50 {ms(direct.delay.p50)} / p99 {ms(direct.delay.p99)} ms), "
            f"and lost {gw.lost} messages."
        )
    console.print(" ".join(said))


def as_json(figures: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in figures.items() if k not in PARTS}
    if "overhead" in figures:
        o: OverheadResult = figures["overhead"]
        out["overhead"] = {**asdict(o), "added_p50_ms": o.added_p50_ms}
    if "fanout" in figures:
        direct, gw = figures["fanout"]
        out["fanout"] = {"direct": asdict(direct), "gateway": asdict(gw)}
    if "dialogue" in figures:
        d: DialogueResult = figures["dialogue"]
        http, bus = Spread.of(d.first("http")), Spread.of(d.first("bus"))
        out["dialogue"] = {
            "max_tokens": d.max_tokens, "http": asdict(http), "bus": asdict(bus),
            "added_ms": {"p50": http.p50 - bus.p50, "p95": http.p95 - bus.p95,
                         "mean": http.mean - bus.mean},
            "paired_differences_ms": d.paired_differences(),
            "same_turn_added_ms": asdict(Spread.of(d.same_turn_added())),
            "pieces": {path: {piece: asdict(Spread.of(d.of(path, piece))) for piece in PIECES}
                       for path in ("http", "bus")},
            "turns": [{**asdict(t), "policy_ms": t.policy_ms, "out_ms": t.out_ms}
                      for t in d.turns],
        }  # fmt: skip
    # NaN is not JSON: a figure that could not be taken is null.
    return cast(dict[str, Any], nan_to_none(out))


async def bench(opts: argparse.Namespace) -> None:
    with ExitStack() as stack:
        url = os.environ.get("REDIS_URL") or stack.enter_context(EmbeddedRedis()).url
        client = Redis.from_url(url)
        size, info = await client.dbsize(), await client.info("server")
        await client.aclose()
        if size:
            sys.exit(f"{url} holds {size} keys and the benchmark flushes it between parts; "
                     "point REDIS_URL at an empty database (e.g. .../15) or unset it")  # fmt: skip
        server = f"{'valkey' if 'valkey_version' in info else 'redis'} "
        server += f"{info.get('valkey_version', info['redis_version'])}, {os.cpu_count()} CPUs"
        bus = load_bus_settings(redis_url=url)
        figures: dict[str, Any] = {"server": server, "quick": opts.quick}
        began = time.monotonic()
        if "overhead" in opts.parts:
            print(f"overhead: {opts.samples} samples per path ...", file=sys.stderr, flush=True)
            figures["overhead"] = await overhead(bus, opts.samples)
        if "fanout" in opts.parts:
            print(f"fan-out: {opts.clients} clients, {opts.messages} messages at {opts.rate:g}/s"
                  " ...", file=sys.stderr, flush=True)  # fmt: skip
            figures["fanout"] = await fanout(bus, opts.clients, opts.messages, opts.rate)
        if "dialogue" in opts.parts:
            print(f"dialogue: {opts.lines} lines per path (+1 warm-up) ...", file=sys.stderr,
                  flush=True)  # fmt: skip
            figures["dialogue"] = await dialogue(bus, opts.lines, opts.max_tokens)
        figures["seconds"] = round(time.monotonic() - began, 1)
        console = Console(width=120)
        print_report(figures, console)
        figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
        load = ", ".join(f"{x:.1f}" for x in figures["load_average"])
        console.print(f"[dim]{server}; load average (1, 5, 15 min) at the end: {load}; "
                      f"{figures['seconds']} s[/dim]")  # fmt: skip
        if opts.json:
            document = json.dumps(as_json(figures), indent=2) + "\n"
            await asyncio.to_thread(Path(opts.json).write_text, document)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a run of about a minute")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"which parts, comma-separated ({','.join(PARTS)})")  # fmt: skip
    parser.add_argument("--lines", type=int, help="dialogue lines per path (6; quick 2)")
    parser.add_argument("--max-tokens", type=int, default=48, help="longest reply (48)")
    parser.add_argument("--samples", type=int, help="overhead samples per path (1000; quick 300)")
    parser.add_argument("--clients", type=int, help="WebSocket clients (50; quick 10)")
    parser.add_argument("--rate", type=float, help="fan-out msg/s published (200; quick 100)")
    parser.add_argument("--seconds", type=float, help="fan-out publishing time (5; quick 3)")
    for internal in ("--role", "--redis", "--ws", "--out"):
        parser.add_argument(internal, help=argparse.SUPPRESS)
    for internal in ("--partitions", "--total"):
        parser.add_argument(internal, type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.role:
        asyncio.run(reader_main(opts))
        return
    opts.parts = [p.strip() for p in opts.parts.split(",") if p.strip()]
    if unknown := set(opts.parts) - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    opts.lines = opts.lines or (2 if opts.quick else 6)
    opts.samples = opts.samples or (300 if opts.quick else 1000)
    opts.clients = opts.clients or (10 if opts.quick else 50)
    opts.rate = opts.rate or (100.0 if opts.quick else 200.0)
    opts.seconds = opts.seconds or (3.0 if opts.quick else 5.0)
    opts.messages = max(2, round(opts.rate * opts.seconds))
    asyncio.run(bench(opts))


if __name__ == "__main__":
    main()
