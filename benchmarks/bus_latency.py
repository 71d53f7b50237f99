"""Per-hop latency and throughput: raw redis-py streams against the Marionette bus runtime.

    python -m benchmarks.bus_latency [--quick] [--messages N] [--rate R] [--burst N]

For each payload (a 20 ms audio frame, a short chat line) and each path (raw XADD ->
XREADGROUP + XACK; or "bus", Producer.publish -> a Stage's @consumes handler under StageRuntime;
"recorded", the bus while `marionette record` reads every topic stream in a third process,
started after the flush and ready before the first publish; and for chat also "traced":
the bus with both processes tracing to the local span store, as the stages do; every chat
message then makes three spans, frames none), the producer runs here and the consumer in
a child process. Latency is one hop, from just before the publish call to handler entry,
at a fixed rate; throughput is a burst published as fast as one awaiting producer can,
from its first publish to the last handler entry. Both processes read time.time_ns() on
the same machine, so their clocks agree. On the recorded path the recording is read back
after the run, to show that it holds every message published.

Without REDIS_URL it starts an embedded server. A REDIS_URL must name an empty database:
it is flushed before each measurement, and the bus path writes the real topic streams.
"""

import argparse
import asyncio
import math
import os
import signal
import sys
import tempfile
import time
import uuid
from array import array
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar, cast

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from benchmarks.figures import stop_child
from contracts import AudioFrame, ChatMessage, Envelope, Topic
from contracts.envelope import message_id
from contracts.topics import AUDIO_FRAME, CHAT_MESSAGE
from services.bus import Bus, Producer, Stage, StageRuntime, consumes, load_bus_settings
from services.bus.partitions import stream_for
from services.bus.redis_server import EmbeddedRedis
from services.replay.recording import SUFFIX, Recording
from services.telemetry.settings import TelemetrySettings
from services.telemetry.setup import stage_telemetry

REPO_ROOT = Path(__file__).resolve().parents[1]
GROUP = "bench-consumer"
RAW_STREAM = "bench.raw"
PROGRESS_KEY, RESULTS_KEY = "bench:progress", "bench:results"
PCM = os.urandom(640)  # 20 ms of 16 kHz mono s16le
TOPICS: dict[str, Topic[Envelope]] = {"audio": AUDIO_FRAME, "chat": CHAT_MESSAGE}  # type: ignore[dict-item]
PATHS: dict[str, tuple[str, ...]] = {
    "audio": ("raw", "bus", "recorded"),
    "chat": ("raw", "bus", "recorded", "traced"),
}
Send = Callable[[int], Awaitable[int]]
ReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
T = TypeVar("T")


def make_message(payload: str, session: str, seq: int) -> Envelope:
    if payload == "audio":
        # A frame belongs to no turn: its capture run (here the session) is its origin.
        return AudioFrame(
            session_id=session, message_id=message_id(session, seq), seq=seq, pcm=PCM,
            captured_at=time.time(),
        )  # fmt: skip
    return ChatMessage(
        session_id=session, turn_id="t1", seq=seq, platform="cli", author="viewer42",
        text=f"hello streamer, this is chat message number {seq}!",
    )  # fmt: skip


# --- consumer (child process) -------------------------------------------------------------


class BenchConsumer(Stage):
    """The bus path's consumer: notes each message's seq on handler entry."""

    name = GROUP

    def __init__(self, bus: Bus, record: Callable[[int], None]) -> None:
        super().__init__(bus)
        self.record = record


# One class per payload: FastStream decodes and validates by the topic's model.
class AudioConsumer(BenchConsumer):
    @consumes(AUDIO_FRAME)
    async def on_frame(self, frame: AudioFrame) -> None:
        self.record(frame.seq)


class ChatConsumer(BenchConsumer):
    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        self.record(message.seq)


CONSUMERS: dict[str, type[BenchConsumer]] = {"audio": AudioConsumer, "chat": ChatConsumer}


def tracing(path: str, role: str, stack: ExitStack) -> None:
    """On the traced path, set this process up as a stage process is: spans to a store."""
    if path == "traced":
        store = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(stage_telemetry(role, TelemetrySettings(trace_dir=store)))


async def consume(path: str, payload: str, url: str, total: int, queue: int) -> None:
    recv = array("q", [0]) * total  # handler-entry time.time_ns() by seq
    handled = 0
    finished = asyncio.Event()
    # SIGTERM ends the run early but still reports what was handled.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, finished.set)
    client = Redis.from_url(url)

    def record(seq: int) -> None:
        nonlocal handled
        recv[seq] = time.time_ns()
        handled += 1

    async def watch(count: Callable[[], int]) -> None:
        # A side task reports progress, so that no handler waits on a round trip of ours.
        while count() < total:
            await client.set(PROGRESS_KEY, count())
            await asyncio.sleep(0.02)
        finished.set()

    tasks: list[asyncio.Task[None]] = []
    if path == "raw":

        async def read_loop() -> None:
            while True:
                reply = await client.xreadgroup(
                    GROUP, GROUP, {RAW_STREAM: ">"}, count=64, block=100
                )
                for _, rows in cast(ReadReply, reply or []):
                    for entry_id, fields in rows:
                        record(int(fields[b"seq"]))
                        await client.xack(RAW_STREAM, GROUP, entry_id)

        tasks += [asyncio.create_task(read_loop()), asyncio.create_task(watch(lambda: handled))]
        await finished.wait()
    else:
        topic = TOPICS[payload]
        stage_cls = CONSUMERS[payload]

        async def build(bus: Bus) -> BenchConsumer:
            return stage_cls(bus, record)

        settings = load_bus_settings(redis_url=url, queue_size=queue)
        async with StageRuntime(stage_cls, settings, build=build) as runtime:
            stats = runtime.stats(topic.name)
            # Entries dropped by the drop_oldest overflow count as done, or a run never ends.
            tasks.append(asyncio.create_task(watch(lambda: handled + stats.dropped)))
            await finished.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.rpush(RESULTS_KEY, recv.tobytes())
    await client.aclose()


# --- producer (this process) --------------------------------------------------------------


@asynccontextmanager
async def producer(path: str, payload: str, url: str, session: str) -> AsyncIterator[Send]:
    """A send(seq) -> time.time_ns() taken just before the publish call."""
    if path == "raw":
        client = Redis.from_url(url)
        maxlen = TOPICS[payload].maxlen
        # Same bytes the bus carries in its body: the model's JSON, serialized once.
        body = make_message(payload, session, 0).model_dump_json().encode()

        async def send_raw(seq: int) -> int:
            sent = time.time_ns()
            await client.xadd(RAW_STREAM, {b"seq": b"%d" % seq, b"d": body}, maxlen=maxlen)
            return sent

        await client.xgroup_create(RAW_STREAM, GROUP, id="0", mkstream=True)
        try:
            yield send_raw
        finally:
            await client.aclose()
        return
    settings = load_bus_settings(redis_url=url)
    async with Producer(settings, "bench-producer", [TOPICS[payload]]) as out:

        async def send_bus(seq: int) -> int:
            message = make_message(payload, session, seq)
            sent = time.time_ns()
            await out.publish(message)
            return sent

        yield send_bus


async def send_all(send: Send, seqs: range, sent: "array[int]", rate: float | None) -> None:
    start = time.perf_counter()
    for k, seq in enumerate(seqs):
        # Paced against the schedule, not the previous send, so slow sends do not lower the rate.
        delay = start + k / rate - time.perf_counter() if rate else 0.0
        if delay > 0:
            await asyncio.sleep(delay)
        sent[seq] = await send(seq)


def tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read()[-3000:].decode(errors="replace")


async def until(
    probe: Callable[[], Awaitable[T | None]],
    child: Process,
    log: IO[bytes],
    name: str = "the consumer",
) -> T:
    """Poll probe until it returns a value; polled because redis-py 8 cuts BLPOP off at 5 s."""
    deadline = time.monotonic() + 60
    while True:
        exited = child.returncode is not None  # read first: a child may report, then exit
        if (found := await probe()) is not None:
            return found
        if exited:
            raise RuntimeError(f"{name} exited with {child.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} stalled for 60 s")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def recorder(client: Redis, url: str, tape: Path) -> AsyncIterator[None]:
    """`marionette record` of every topic to `tape`, in a child process as an operator runs it;
    stopped with Ctrl-C (SIGINT) on exit, after which it has drained the streams."""
    partitions = load_bus_settings(redis_url=url).partitions
    # The same partitions as the bench, or it would not read every stream the bus writes.
    env = {**os.environ, "REDIS_URL": url, "MARIONETTE_PARTITIONS": str(partitions)}

    async def reading() -> bool | None:
        # Ready at its first XREAD, not at its "recording" line: it takes the start
        # positions (the streams' ends) in between, and would miss what came before.
        clients = await client.client_list()
        return True if any(c.get("cmd") == "xread" for c in clients) else None

    with tempfile.TemporaryFile() as log:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", "record", str(tape),
            cwd=REPO_ROOT, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            await until(reading, child, log, "the recorder")
            yield
            child.send_signal(signal.SIGINT)
            await asyncio.wait_for(child.wait(), 30)
            if child.returncode:
                raise RuntimeError(f"the recorder exited with {child.returncode}:\n{tail(log)}")
        finally:
            await stop_child(child)


def count_records(tape: Path) -> int:
    recording = Recording(tape)
    count = sum(1 for _ in recording.records())
    if recording.truncated:
        raise RuntimeError(f"{tape} is cut short: the recorder did not close it")
    return count


@dataclass(frozen=True)
class Result:
    p50_ms: float
    p99_ms: float
    throughput: float
    publish_rate: float
    lost: int
    entry_bytes: int
    recorded: int | None = None
    """Messages in the recording, on the recorded path."""


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] / 1e6


def rate(count: int, first_ns: int, last_ns: int) -> float:
    return count / max((last_ns - first_ns) / 1e9, 1e-9)


async def measure(path: str, payload: str, url: str, opts: argparse.Namespace) -> Result:
    paced = range(opts.warmup, opts.warmup + opts.messages)
    burst = range(paced.stop, paced.stop + opts.burst)
    session = f"bench-{path}-{payload}-{uuid.uuid4().hex[:6]}"
    sent = array("q", [0]) * burst.stop
    client = Redis.from_url(url)
    await client.flushdb()  # fresh streams, groups, leases and dedup marks for every run
    args = ["--role", "consumer", "--path", path, "--payload", payload, "--url", url]
    # A queue that holds the whole burst: else drop_oldest (audio.frame) discards frames of
    # the backlog read into memory, and msg/s would count drops as well as handled messages.
    args += ["--total", str(burst.stop), "--queue", str(max(256, opts.burst))]

    async def handled_at_least(target: int) -> bool | None:
        return True if int(await client.get(PROGRESS_KEY) or 0) >= target else None

    async def results() -> bytes | None:
        return cast("bytes | None", await client.lpop(RESULTS_KEY))

    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as tmp:
        tape = Path(tmp) / f"bench{SUFFIX}"
        # Entered after the flush and before the producer, so it records every message.
        recording: AbstractAsyncContextManager[None] = (
            recorder(client, url, tape) if path == "recorded" else nullcontext()
        )
        child: Process | None = None
        try:
            async with recording, producer(path, payload, url, session) as send:
                child = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "benchmarks.bus_latency", *args,
                    cwd=REPO_ROOT, stdout=log, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                # The warm-up also covers the child's start: it reads the backlog from id 0.
                await send_all(send, range(paced.start), sent, opts.rate)
                await until(lambda: handled_at_least(paced.start), child, log)
                await send_all(send, paced, sent, opts.rate)
                await until(lambda: handled_at_least(paced.stop), child, log)
                await send_all(send, burst, sent, None)
                recv = array("q", await until(results, child, log))
            await asyncio.wait_for(child.wait(), 15)
            stream = RAW_STREAM if path == "raw" else stream_for(
                TOPICS[payload], session, load_bus_settings(redis_url=url).partitions  # type: ignore[arg-type]
            )  # fmt: skip
            last = cast(
                list[tuple[bytes, dict[bytes, bytes]]], await client.xrevrange(stream, count=1)
            )
            recorded = count_records(tape) if path == "recorded" else None
        finally:
            if child is not None:
                await stop_child(child)
            await client.aclose()
    hops = [recv[i] - sent[i] for i in paced if recv[i]]
    handled = [recv[i] for i in burst if recv[i]]
    return Result(
        p50_ms=percentile(hops, 0.50),
        p99_ms=percentile(hops, 0.99),
        throughput=rate(len(handled), sent[burst.start], max(handled)),
        publish_rate=rate(len(burst) - 1, sent[burst.start], sent[burst.stop - 1]),
        lost=sum(1 for i in range(paced.start, burst.stop) if not recv[i]),
        entry_bytes=sum(len(k) + len(v) for k, v in last[0][1].items()),
        recorded=recorded,
    )


def on_off(results: dict[tuple[str, str], Result], payload: str, path: str) -> str:
    """The path's figures over the bus path's: p50 and p99 above 1x, throughput below, cost."""
    on, off = results[(payload, path)], results[(payload, "bus")]
    return (
        f"p50 {on.p50_ms / off.p50_ms:.2f}x, p99 {on.p99_ms / off.p99_ms:.2f}x, "
        f"throughput {on.throughput / off.throughput:.2f}x"
    )


def print_tables(
    results: dict[tuple[str, str], Result], opts: argparse.Namespace, server: str
) -> None:
    console = Console(width=100)
    table = Table(
        title=f"One hop, publish -> handler entry: {opts.messages} msgs at {opts.rate:g}/s; "
        f"throughput: a burst of {opts.burst}",
        caption=server,
    )
    for name in ("payload", "path", "entry B", "p50 ms", "p99 ms", "msg/s", "publish msg/s"):
        table.add_column(name, justify="left" if name in ("payload", "path") else "right")
    table.add_column("load", justify="right")
    table.add_column("lost", justify="right")
    for (payload, path), r in results.items():
        table.add_row(
            payload, path, str(r.entry_bytes), f"{r.p50_ms:.3f}", f"{r.p99_ms:.3f}",
            f"{r.throughput:,.0f}", f"{r.publish_rate:,.0f}",
            f"{opts.rate / r.throughput:.0%}", str(r.lost),
        )  # fmt: skip
    console.print(table)
    ratios = Table(title="bus / raw")
    for name in ("payload", "p50", "p99", "throughput"):
        ratios.add_column(name, justify="left" if name == "payload" else "right")
    for payload in TOPICS:
        bus, raw = results[(payload, "bus")], results[(payload, "raw")]
        ratios.add_row(
            payload, f"{bus.p50_ms / raw.p50_ms:.2f}x", f"{bus.p99_ms / raw.p99_ms:.2f}x",
            f"{bus.throughput / raw.throughput:.2f}x",
        )  # fmt: skip
    console.print(ratios)
    console.print(f"tracing on / off (chat, bus): {on_off(results, 'chat', 'traced')}")
    published = opts.warmup + opts.messages + opts.burst
    for payload in TOPICS:
        console.print(
            f"recording on / off ({payload}, bus): {on_off(results, payload, 'recorded')}; "
            f"{results[(payload, 'recorded')].recorded} of {published} recorded"
        )
    console.print(
        "raw: XADD of pre-serialized JSON, XREADGROUP COUNT 64, an XACK per entry, no decoding.\n"
        "bus: a pydantic model and a plain XADD per publish (the producer, a tool, owns no "
        "partitions;\n  each publish from a consumer that owns partitions is a fenced Lua XADD). "
        "Per entry: a\n  FastStream decode and validation, a fenced Lua 'begin' script (fence "
        "check, duplicate check,\n  in-hand marker) before the handler and one fenced 'commit' "
        "script (XACK, duplicate mark,\n  in-hand marker cleared, the stage's changed state) "
        "after it.\n"
        "recorded: bus, while `marionette record` of every topic runs in a third process.\n"
        "msg/s: burst / (first publish -> last handler entry); publish msg/s: the producer alone.\n"
        "load: --rate / msg/s. Past ~60 % the latencies are mostly queueing and vary run to run.\n"
        "lost: entries never handled (drop_oldest overflow); should be 0."
    )


async def bench(opts: argparse.Namespace) -> None:
    with ExitStack() as stack:
        url = os.environ.get("REDIS_URL") or stack.enter_context(EmbeddedRedis()).url
        client = Redis.from_url(url)
        size, info = await client.dbsize(), await client.info("server")
        await client.aclose()
        server = f"{'valkey' if 'valkey_version' in info else 'redis'} "
        server += f"{info.get('valkey_version', info['redis_version'])}, {os.cpu_count()} CPUs"
        if size:
            sys.exit(f"{url} holds {size} keys and the benchmark flushes it between runs; "
                     "point REDIS_URL at an empty database (e.g. .../15) or unset it")  # fmt: skip
        results: dict[tuple[str, str], Result] = {}
        for payload in TOPICS:
            for path in PATHS[payload]:
                # Last, as a provider cannot be unset: the paths before it run untraced.
                tracing(path, "bench-producer", stack)
                print(f"measuring {payload} over {path} ...", file=sys.stderr, flush=True)
                results[(payload, path)] = await measure(path, payload, url, opts)
        print_tables(results, opts, server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~20 s run with fewer messages")
    parser.add_argument("--messages", type=int, help="paced messages measured (2000; quick 300)")
    # 200/s keeps the bus consumer about a third busy on 2 cores; at 500/s it is 60-90 % busy
    # and p50 measures queueing more than the hop.
    parser.add_argument("--rate", type=float, default=200.0, help="paced rate, msg/s (200)")
    parser.add_argument("--burst", type=int, help="messages in the throughput burst (4000; 1000)")
    parser.add_argument("--warmup", type=int, help="paced messages not measured (200; 60)")
    for internal in ("--role", "--path", "--payload", "--url"):
        parser.add_argument(internal, help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--queue", type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.role == "consumer":
        with ExitStack() as stack:
            tracing(opts.path, "bench-consumer", stack)
            asyncio.run(consume(opts.path, opts.payload, opts.url, opts.total, opts.queue))
        return
    opts.messages = opts.messages or (300 if opts.quick else 2000)
    opts.burst = opts.burst or (1000 if opts.quick else 4000)
    opts.warmup = opts.warmup or (60 if opts.quick else 200)
    asyncio.run(bench(opts))


if __name__ == "__main__":
    main()
