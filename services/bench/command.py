"""`marionette bench`: start the pipeline (unless one is running), speak, report."""

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from services.bench.baseline import raw_hops
from services.bench.live import TurnResult, run_turns
from services.bench.timeline import PARTS, percentile
from services.bench.utterances import synthesize
from services.bus import BusSettings
from services.bus.redis_server import EmbeddedRedis
from services.supervisor import Supervisor, stage_command

BENCH_STAGES = ("asr", "policy", "tts", "avatar", "playback")
"""Capture is the bench itself; avatar and playback run because they share the CPU."""

ROWS = (*PARTS, "bus hops", "voice-to-voice")


@dataclass(frozen=True)
class Summary:
    part: str
    p50_ms: float
    p95_ms: float
    mean_ms: float


@dataclass(frozen=True)
class BenchReport:
    turns: list[TurnResult]
    summary: list[Summary]
    raw_hop_p50_ms: float
    raw_hop_p95_ms: float

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def summarize(turns: list[TurnResult]) -> list[Summary]:
    timed = [t.parts for t in turns if t.parts]
    if not timed:
        return []
    rows = []
    for part in ROWS:
        values = [parts[part] * 1000 for parts in timed]
        rows.append(
            Summary(part, percentile(values, 50), percentile(values, 95), sum(values) / len(values))
        )
    return rows


@contextmanager
def pipeline(bus: BusSettings, log_path: Path) -> Iterator[BusSettings]:
    """The running pipeline to bench: REDIS_URL's, else one started here and stopped after."""
    if bus.redis_url:
        yield bus
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with EmbeddedRedis(binary=bus.redis_server) as server, log_path.open("w") as log:

        def write(stage: str, line: str) -> None:
            log.write(f"{stage:>8} | {line}\n")
            log.flush()

        supervisor = Supervisor(
            {name: stage_command(name) for name in BENCH_STAGES},
            {**os.environ, "REDIS_URL": server.url},
            write,
        )
        supervisor.start()
        stopped = threading.Event()

        def watch() -> None:
            while not stopped.wait(0.2):
                supervisor.poll()

        watcher = threading.Thread(target=watch, name="bench-supervisor", daemon=True)
        watcher.start()
        try:
            yield bus.model_copy(update={"redis_url": server.url})
        finally:
            stopped.set()
            watcher.join(timeout=5)
            supervisor.stop()


def run_bench(
    bus: BusSettings,
    count: int,
    warmup: int,
    log_path: Path,
    report: Callable[[int, TurnResult], None],
) -> BenchReport:
    utterances = synthesize(count + warmup)
    with pipeline(bus, log_path) as live:
        turns = asyncio.run(run_turns(live, utterances, warmup, report))
        hops = asyncio.run(raw_hops(live.redis_url or ""))
    return BenchReport(
        turns=turns,
        summary=summarize(turns),
        raw_hop_p50_ms=percentile(hops, 50) * 1000,
        raw_hop_p95_ms=percentile(hops, 95) * 1000,
    )
