"""`marionette bench`: start the pipeline (unless one is running), speak, report."""

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from services.bench.baseline import raw_hops
from services.bench.live import TurnResult, run_turns
from services.bench.timeline import PARTS, percentile
from services.bench.utterances import synthesize
from services.bus import BusSettings
from services.cli.common import bus_settings, console, out
from services.logs import setup_logging
from services.system import local_system

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
    first_turn: TurnResult | None = None  # the first after the stages started (warm-up)

    @property
    def preemptive_turns(self) -> int:
        return sum(t.preemptive for t in self.turns)

    @property
    def wasted_generations(self) -> int:
        """Preemptive replies asr dropped because the user went on talking."""
        return sum(t.wasted for t in self.turns)

    def as_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "preemptive_turns": self.preemptive_turns,
            "wasted_generations": self.wasted_generations,
        }


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
    with log_path.open("w") as log:

        def write(stage: str, line: str) -> None:
            log.write(f"{stage:>8} | {line}\n")
            log.flush()

        # No spares: they only matter when a stage dies, and loading theirs would compete
        # with the first turns.
        stages = dict.fromkeys(BENCH_STAGES, 1)
        with local_system(bus, stages, write, spares=False) as (live, _):
            yield live


def run_bench(
    bus: BusSettings,
    count: int,
    warmup: int,
    log_path: Path,
    report: Callable[[int, TurnResult], None],
) -> BenchReport:
    utterances = synthesize(count + warmup)
    first: list[TurnResult] = []

    def keep_first(number: int, turn: TurnResult) -> None:
        if number == 0:
            first.append(turn)
        report(number, turn)

    with pipeline(bus, log_path) as live:
        turns = asyncio.run(run_turns(live, utterances, warmup, keep_first))
        hops = asyncio.run(raw_hops(live.redis_url or ""))
    return BenchReport(
        turns=turns,
        summary=summarize(turns),
        raw_hop_p50_ms=percentile(hops, 50) * 1000,
        raw_hop_p95_ms=percentile(hops, 95) * 1000,
        first_turn=first[0] if first and warmup else None,
    )


def bench(
    utterances: Annotated[int, typer.Option(help="Spoken questions to time.", min=1)] = 12,
    warmup: Annotated[int, typer.Option(help="Turns first, not counted (cold model).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    log: Annotated[Path, typer.Option(help="The stages' log.")] = Path(".marionette/bench.log"),
) -> None:
    """Voice-to-voice latency of the live pipeline: p50/p95, and where the time goes.

    Starts Redis and the stages itself, unless REDIS_URL names a running system."""
    setup_logging(console=console)
    settings = bus_settings()

    def progress(number: int, turn: TurnResult) -> None:
        kind = "warm-up" if number < warmup else f"turn {number - warmup + 1}"
        total = turn.parts.get("voice-to-voice")
        timing = f"{total * 1000:.0f} ms" if total is not None else f"[red]{turn.error}[/]"
        console.print(f"{kind}: heard {turn.heard!r} -> {timing}")

    if not settings.redis_url:
        console.print(f"starting the pipeline (its log: {log})")
    report = run_bench(settings, utterances, warmup, log, progress)
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
        return
    table = Table(title=f"voice-to-voice over {len(report.turns)} turns (ms)")
    for column in ("part", "p50", "p95", "mean"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for row in report.summary:
        style = "bold" if row.part in ("voice-to-voice", "bus hops") else None
        table.add_row(
            row.part, f"{row.p50_ms:.0f}", f"{row.p95_ms:.0f}", f"{row.mean_ms:.0f}", style=style
        )
    out.print(table)
    out.print(
        f"raw redis-py XADD -> XREADGROUP hop on the same Redis: p50 {report.raw_hop_p50_ms:.1f} "
        f"ms, p95 {report.raw_hop_p95_ms:.1f} ms (a turn has 3 hops)"
    )
    if report.first_turn is not None and "voice-to-voice" in report.first_turn.parts:
        started = "after the stages started" if not settings.redis_url else "of this bench"
        first_ms = report.first_turn.parts["voice-to-voice"] * 1000
        out.print(f"first turn {started} (warm-up, not in the table): {first_ms:.0f} ms")
    out.print(
        f"preemptive turns (transcript out before the end of turn): {report.preemptive_turns} "
        f"of {len(report.turns)}; replies prepared and thrown away (the user went on): "
        f"{report.wasted_generations}"
    )
    missed = [t for t in report.turns if t.error]
    if missed:
        out.print(f"[red]{len(missed)} turn(s) failed:[/] " + "; ".join(t.error for t in missed))
        raise typer.Exit(code=1)
