"""`marionette chaos`: the soak and fault run users try before a show, and its report."""

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from services.chaos.run import DEFAULT_STAGES, ChaosPlan, run_chaos
from services.chaos.verdict import ChaosReport
from services.cli.common import console, fail, out
from services.cli.stages import parse_scale
from services.logs import setup_logging
from services.registry import STAGES


def chaos(
    turns: Annotated[int, typer.Option(help="Turns to send.", min=1)] = 40,
    every: Annotated[float, typer.Option(help="Seconds between turns.", min=0.1)] = 3.0,
    spoken: Annotated[
        float, typer.Option(help="Share of turns spoken (Piper questions) instead of chatted.")
    ] = 0.25,
    kill_every: Annotated[
        str, typer.Option(help="A random stage process is SIGKILLed every MIN-MAX seconds.")
    ] = "2-6",
    kills: Annotated[
        int | None, typer.Option(help="Stop after this many kills (default: while sending).")
    ] = None,
    redis_restarts: Annotated[
        int, typer.Option(help="Kill Redis this many times (1 s down, same port and data).")
    ] = 0,
    scale: Annotated[
        list[str] | None, typer.Option(help="Replicas of a stage, STAGE=N (repeat).")
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage", "-s", help="Stages to run (default: asr policy tts avatar playback)."
        ),
    ] = None,
    victim: Annotated[
        list[str] | None, typer.Option(help="Stages that may be killed (default: all run).")
    ] = None,
    settle: Annotated[float, typer.Option(help="Seconds to wait for the last replies.")] = 120,
    spares: Annotated[
        bool, typer.Option(help="A prepared spare beside each stage, as `marionette up` has.")
    ] = True,
    seed: Annotated[int | None, typer.Option(help="Repeat a run's random choices.")] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Where Redis data, WAVs and the stages' log go.")
    ] = None,
    as_json: Annotated[
        Path | None, typer.Option("--json", help="Write the report here too (JSON).")
    ] = None,
) -> None:
    """Talk to a whole Marionette of its own while killing its stages and restarting its
    Redis; report turns lost, answered twice, cut short, dead letters, and recovery times.

    Exits 1 when any turn was lost, answered twice or truncated, or a dead letter appeared."""
    setup_logging(console=console)
    chosen = stage or sorted(DEFAULT_STAGES)
    unknown = [s for s in [*chosen, *(victim or [])] if s not in STAGES]
    if unknown:
        raise fail(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(sorted(STAGES))}")
    low, _, high = kill_every.partition("-")
    try:
        interval = (float(low), float(high or low))
    except ValueError:
        raise fail(f"--kill-every {kill_every!r}: write MIN-MAX seconds, e.g. 2-6") from None
    plan = ChaosPlan(
        turns=turns, every_s=every, spoken_share=spoken if "asr" in chosen else 0.0,
        kill_every_s=interval, kills=kills, redis_restarts=redis_restarts,
        stages={name: 1 for name in chosen} | parse_scale(scale), victims=victim,
        settle_s=settle, seed=seed, spares=spares,
    )  # fmt: skip
    folder = workdir or Path(tempfile.mkdtemp(prefix="marionette-chaos-"))
    console.print(f"chaos run in {folder} (the stages' log: {folder / 'stages.log'})")
    report = run_chaos(plan, folder, lambda line: console.print(f"  {line}", highlight=False))
    document = report.as_json()
    target = as_json or folder / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(document, indent=2))
    print_report(report)
    out.print(f"report: {target}")
    summary = document["summary"]
    if (
        summary["lost"]
        or summary["answered twice"]
        or summary["truncated"]
        or (summary["innocent dead letters"])
    ):
        raise typer.Exit(code=1)


def _spread(values: dict[str, Any]) -> str:
    if values["p50"] is None:
        return "-"
    return f"{values['p50']:.2f} / {values['p95']:.2f} / {values['max']:.2f}"


def print_report(report: ChaosReport) -> None:
    summary = report.summary()
    replicas = ", ".join(f"{name} x{count}" for name, count in report.replicas.items())
    table = Table("", "", title=f"chaos: {replicas}, {report.duration_s:.0f} s")
    for name in ("turns sent", "answered once", "answered twice", "lost", "truncated",
                 "innocent dead letters", "kills", "kills not recovered"):  # fmt: skip
        bad = name in ("answered twice", "lost", "truncated", "innocent dead letters",
                       "kills not recovered") and summary[name]  # fmt: skip
        table.add_row(name, f"[red]{summary[name]}[/]" if bad else str(summary[name]))
    table.add_row("recovery after a kill, s (p50 / p95 / max)", _spread(summary["recovery s"]))
    if report.redis_restarts:
        table.add_row(
            f"next turn answered after a Redis restart, s ({summary['redis restarts']})",
            _spread(summary["next turn answered after a redis restart s"]),
        )
        table.add_row(
            "leases that changed hands across a Redis restart",
            str(summary["leases that changed across a redis restart"]),
        )
    for name, values in summary["stage latency s"].items():
        table.add_row(f"{name} latency, s (p50 / p95 / max)", _spread(values))
    out.print(table)
    for turn in report.turns:
        if turn.verdict != "answered once":
            out.print(f"[red]{turn.verdict}[/] {turn.session_id}/{turn.turn_id}: {turn.why}")
    for letter in report.dead_letters[:10]:
        out.print(f"[red]dead letter[/] {letter['topic']}: {letter['reason']}")
