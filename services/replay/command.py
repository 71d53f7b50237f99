"""`marionette record` and `marionette replay`: the commands and what they print."""

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from redis.asyncio import Redis
from rich.table import Table

from contracts.envelope import Envelope
from contracts.topics import ALL_TOPICS, Topic, topic_named
from services.bus.settings import BusSettings
from services.cli.common import bus_settings, console, existing_redis, fail, out
from services.replay.diff import ReplayReport, Tolerance, TurnDiff, compare
from services.replay.pacing import ReplayStalled
from services.replay.recorder import Recorder, RecordingStats, StopAfter
from services.replay.recording import (
    SUFFIX,
    Recording,
    RecordingError,
    RecordingHeader,
    RecordingWriter,
)
from services.replay.replayer import INPUT_TOPICS, replay_entries, replay_inputs
from services.replay.turns import summarize_turns
from services.settings import load_settings
from services.telemetry.settings import TelemetrySettings
from services.telemetry.setup import stage_telemetry

TopicsOption = Annotated[
    list[str] | None,
    typer.Option("--topic", "-t", help="Only these topics (repeat, or comma-separate)."),
]


def _topics(names: list[str] | None) -> list[Topic[Envelope]]:
    if not names:
        return list(ALL_TOPICS)
    try:
        return [topic_named(n.strip()) for name in names for n in name.split(",") if n.strip()]
    except ValueError as exc:
        raise fail(str(exc)) from None


def _bus() -> BusSettings:
    bus = bus_settings()
    return bus.model_copy(update={"redis_url": existing_redis(bus)})


def _open(path: Path) -> Recording:
    try:
        return Recording(path)
    except RecordingError as exc:
        raise fail(str(exc)) from None


def record(
    output: Annotated[
        Path | None,
        typer.Argument(help=f"File to write (default: recordings/<date-time>{SUFFIX})."),
    ] = None,
    topics: TopicsOption = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    turns: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Stop once this many turns finished (their audio played; or their last "
            "chunk, or final token, when those topics are not recorded).",
        ),
    ] = None,
    from_start: Annotated[
        bool, typer.Option(help="Also take what the streams still hold from before.")
    ] = False,
) -> None:
    """Record topics of the running system to a file (Ctrl-C stops). The recorder only
    reads: the stages never wait for it."""
    bus = _bus()
    chosen = _topics(topics)
    path = output or Path("recordings") / time.strftime(f"%Y%m%d-%H%M%S{SUFFIX}")
    header = RecordingHeader(topics=tuple(t.name for t in chosen), partitions=bus.partitions)
    writer = RecordingWriter(path, header)
    stops = [
        "Ctrl-C",
        *([f"{duration:g} s"] if duration else []),
        *([f"{turns} turns"] if turns else []),
    ]
    announce = f"recording {', '.join(header.topics)} from {bus.redis_url} to {path}"
    announce += f" (stops: {', '.join(stops)})"
    try:
        stats = asyncio.run(
            _record(bus, chosen, writer, from_start, StopAfter(duration, turns), announce)
        )
    finally:
        writer.close()
    _print_recorded(path, stats)


async def _record(
    bus: BusSettings,
    topics: list[Topic[Envelope]],
    writer: RecordingWriter,
    from_start: bool,
    until: StopAfter,
    announce: str,
) -> RecordingStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = Redis.from_url(bus.redis_url or "")
    try:
        recorder = Recorder(client, topics, bus.partitions, writer, from_start=from_start)
        recording = asyncio.create_task(recorder.run(stop, until))
        await asyncio.wait(
            [recording, asyncio.create_task(recorder.ready.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if recorder.ready.is_set():  # said once the start positions are taken: nothing is missed
            console.print(announce)
        return await recording
    finally:
        await client.aclose()


def _print_recorded(path: Path, stats: RecordingStats) -> None:
    table = Table("topic", "messages", title=f"Recorded to {path}")
    for name, count in sorted(stats.per_topic.items()):
        table.add_row(name, str(count))
    out.print(table)
    for stream, missed in sorted(stats.lost.items()):
        console.print(
            f"[yellow]warning:[/] {missed} entries of {stream} were trimmed (MAXLEN) before "
            "the recorder read them: raise MARIONETTE_STREAM_MAXLEN for it, or record fewer topics"
        )
    size_kb = path.stat().st_size / 1024
    out.print(
        f"{stats.messages} messages, {stats.turns_finished} turns finished, "
        f"{stats.seconds:.1f} s, {size_kb:.0f} KiB"
    )


def replay(
    file: Annotated[Path, typer.Argument(help="A recording made by `marionette record`.")],
    speed: Annotated[
        float, typer.Option(min=0.01, help="Against the recorded pace: 2 is twice as fast.")
    ] = 1.0,
    fast: Annotated[bool, typer.Option("--fast", help="As fast as the consumers take it.")] = False,
    inputs_only: Annotated[
        bool,
        typer.Option(
            "--inputs-only",
            help="Publish only audio.frame and chat.message so today's stages answer them, "
            "then diff their outputs with the recording, turn by turn (exit code 1 when a "
            "turn changed).",
        ),
    ] = False,
    topics: TopicsOption = None,
    keep_sessions: Annotated[
        bool,
        typer.Option(
            help="Inputs-only: use the recorded session ids (default: new ones, so memory "
            "and duplicate checks start afresh)."
        ),
    ] = False,
    wait: Annotated[
        float, typer.Option(help="Inputs-only: seconds to wait for the last replies.")
    ] = 120.0,
    transcript_wer: Annotated[
        float, typer.Option(help="Word error rate a transcript may have and stay 'close'.")
    ] = Tolerance.transcript_wer,
    reply_similarity: Annotated[
        float, typer.Option(help="Word similarity (0-1) a reply needs to stay 'close'.")
    ] = Tolerance.reply_similarity,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    list_only: Annotated[
        bool, typer.Option("--list", help="Show what the recording holds; publish nothing.")
    ] = False,
) -> None:
    """Publish a recording into Redis again: all of it, or only its inputs for today's
    stages to answer, with a per-turn diff against what was recorded."""
    recording = _open(file)
    if list_only:
        _print_listing(recording, as_json)
        return
    bus = _bus()
    pace = None if fast else speed
    try:
        if inputs_only:
            tolerance = Tolerance(transcript_wer=transcript_wer, reply_similarity=reply_similarity)
            report = asyncio.run(
                _replay_inputs(bus, recording, pace, not keep_sessions, wait, tolerance)
            )
            _print_report(report, as_json)
            if not report.ok:
                raise typer.Exit(code=1)
            return
        names = [t.name for t in _topics(topics)] if topics else None
        sent = asyncio.run(_replay_entries(bus, recording, names, pace))
    except (RecordingError, ReplayStalled) as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"published": dict(sent)}))
    else:
        out.print(
            f"replayed {sum(sent.values())} messages: "
            + ", ".join(f"{k} {v}" for k, v in sorted(sent.items()))
        )
    if recording.truncated:
        console.print("[yellow]warning:[/] the recording ends early (its recorder was killed)")


async def _replay_entries(
    bus: BusSettings, recording: Recording, topics: list[str] | None, speed: float | None
) -> Counter[str]:
    client = Redis.from_url(bus.redis_url or "")
    try:
        return await replay_entries(client, recording, bus, topics=topics, speed=speed)
    finally:
        await client.aclose()


async def _replay_inputs(
    bus: BusSettings,
    recording: Recording,
    speed: float | None,
    new_sessions: bool,
    wait_s: float,
    tolerance: Tolerance,
) -> ReplayReport:
    with stage_telemetry("replay", load_settings(TelemetrySettings)):
        result = await replay_inputs(
            bus, recording, speed=speed, new_sessions=new_sessions, wait_s=wait_s
        )
    if result.skipped:
        console.print(
            f"[yellow]warning:[/] {result.skipped} recorded inputs no longer match "
            "the contracts; left out"
        )
    if result.timed_out:
        console.print(
            f"[yellow]warning:[/] stopped waiting after {wait_s:g} s; "
            "unfinished turns show as changed"
        )
    return compare(result.recorded, result.replayed(), tolerance)


def _short(value: object, width: int = 48) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


VERDICT_STYLE = {
    "same": "green",
    "close": "yellow",
    "changed": "red",
    "missing": "red",
    "extra": "red",
    "unfinished": "dim",
}


def _cell(turn: TurnDiff, name: str) -> str:
    diff = turn.field_named(name)
    if diff is None:
        return ""
    if diff.verdict == "same":
        return _short(diff.recorded)
    style = VERDICT_STYLE[diff.verdict]
    detail = f" ({diff.detail})" if diff.detail else ""
    return f"{_short(diff.recorded, 30)} [{style}]→ {_short(diff.replayed, 30)}{detail}[/]"


def _latency(turn: TurnDiff) -> str:
    name = "voice_to_voice" if turn.latency_ms.get("voice_to_voice", (None,))[0] else "first_audio"
    old, new = turn.latency_ms.get(name, (None, None))
    if old is None or new is None:
        return ""
    return f"{name.replace('_', '-')} {old:.0f} → {new:.0f} ms"


def _print_report(report: ReplayReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
        return
    table = Table(
        "turn",
        "verdict",
        "heard",
        "reply",
        "chunks",
        "audio s",
        "latency",
        title="Replay against the recording",
    )
    for turn in report.turns:
        style = VERDICT_STYLE[turn.status]
        table.add_row(
            turn.turn_id, f"[{style}]{turn.status}[/]", _cell(turn, "heard"), _cell(turn, "reply"),
            _cell(turn, "chunks"), _cell(turn, "audio_s"), _latency(turn),
        )  # fmt: skip
    out.print(table)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts().items()))
    out.print(
        ("[green]no turn changed[/]" if report.ok else "[red]turns changed[/]") + f": {counts}"
    )


def _print_listing(recording: Recording, as_json: bool) -> None:
    records = list(recording.records())
    per_topic = Counter(r.topic.name if r.topic else r.stream for r in records)
    turns = summarize_turns(records)
    header = recording.header
    if as_json:
        listing = {
            **header.packed(),
            "per_topic": dict(per_topic),
            "turns": [t.as_json() for t in turns],
            "truncated": recording.truncated,
        }
        typer.echo(json.dumps(listing, indent=2))
        return
    seconds = (records[-1].added_at - records[0].added_at) if records else 0.0
    out.print(
        f"{recording.path}: {len(records)} messages over {seconds:.1f} s, made by marionette "
        f"{header.made_by}, contracts v{header.schema_version}, {header.partitions} partitions"
        + (" [yellow](cut short)[/]" if recording.truncated else "")
    )
    table = Table("turn", "kind", "heard", "reply", "chunks", "audio s")
    for turn in turns:
        table.add_row(
            turn.turn_id,
            turn.kind or "",
            _short(turn.heard),
            _short(turn.reply),
            str(turn.chunks),
            f"{turn.audio_s:.1f}",
        )
    out.print(table)
    out.print(", ".join(f"{name} {count}" for name, count in sorted(per_topic.items())))
    inputs = sum(per_topic[t.name] for t in INPUT_TOPICS)
    if not inputs:
        out.print("[dim]no inputs recorded: --inputs-only has nothing to publish[/]")
