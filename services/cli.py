"""`marionette`: run stages, inspect dead letters, keep the AsyncAPI document current."""

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from redis.asyncio import Redis
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from contracts.topics import ALL_TOPICS, topic_named
from services.bus import ConfigError
from services.bus import dead_letters as dlq
from services.bus.redis_server import EmbeddedRedis, RedisServerError
from services.bus.settings import BusSettings, load_settings
from services.capture.settings import CaptureSettings
from services.capture.sources import CaptureError, input_devices
from services.cli_common import STATE_FILE, bus_settings, console, existing_redis, fail, out
from services.models import ModelMissing
from services.policy.backends import BackendUnavailable
from services.policy.moderation import RulesError
from services.policy.persona import PersonaError
from services.registry import STAGES, StageMain, load_stage, stage_main
from services.replay.command import record, replay
from services.supervisor import StageFailed, Supervisor, stage_command, supervised
from services.telemetry.settings import TelemetrySettings
from services.telemetry.setup import stage_telemetry

POLICY_ERRORS = (BackendUnavailable, ModelMissing, RulesError, PersonaError)

app = typer.Typer(help="Marionette: a live AI character on Redis Streams.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _setup_logging(verbose: bool) -> None:
    if supervised():
        # `marionette up` prefixes each line with the stage; rich's layout would wrap it.
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)-7s %(name)s: %(message)s"))
    else:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("faststream", "faststream.access.redis", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@app.command()
def run(
    stage: Annotated[str, typer.Argument(help=f"One of: {', '.join(sorted(STAGES))}")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus /metrics here (MARIONETTE_TELEMETRY_METRICS_PORT)."),
    ] = None,
) -> None:
    """Run one stage in this process (an embedded Redis when REDIS_URL is not set)."""
    _setup_logging(verbose)
    settings = bus_settings()
    telemetry = _telemetry_settings(metrics_port)
    try:
        main = stage_main(stage)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    server: EmbeddedRedis | None = None
    if not settings.redis_url:
        try:
            server = EmbeddedRedis(binary=settings.redis_server).start()
        except RedisServerError as exc:
            raise fail(str(exc)) from None
        console.print(f"embedded Redis at {server.url} (set REDIS_URL to share one)")
        settings = settings.model_copy(update={"redis_url": server.url})
    try:
        with stage_telemetry(stage, telemetry):
            asyncio.run(_run_until_signal(main, settings))
    except (ConfigError, CaptureError, *POLICY_ERRORS) as exc:
        raise fail(str(exc)) from None
    finally:
        if server is not None:
            server.close()


def _telemetry_settings(metrics_port: int | None = None) -> TelemetrySettings:
    overrides = {} if metrics_port is None else {"metrics_port": metrics_port}
    try:
        return load_settings(TelemetrySettings, **overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


async def _run_until_signal(main: StageMain, settings: BusSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await main(settings, stop)


@app.command("capture")
def capture_command(
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="WAV/FLAC file, or - for raw PCM on stdin.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Microphone id or name.")] = None,
    fast: Annotated[bool, typer.Option(help="Read a file as fast as possible.")] = False,
    session: Annotated[str | None, typer.Option(help="Session id of the audio.")] = None,
) -> None:
    """Publish audio as audio.frame: a file, stdin, or the microphone."""
    from services.capture.stage import run_capture

    _setup_logging(False)
    bus = bus_settings()
    bus = bus.model_copy(update={"redis_url": existing_redis(bus)})
    overrides = {"input": input, "device": device, "session_id": session}
    try:
        settings = load_settings(
            CaptureSettings, **{k: v for k, v in overrides.items() if v is not None}
        )
        if fast:
            settings = settings.model_copy(update={"realtime": False})
        count = asyncio.run(run_capture(bus, settings))
    except (ConfigError, CaptureError) as exc:
        raise fail(str(exc)) from None
    out.print(f"published {count} frames to session {settings.session_id}")


@app.command()
def devices(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """List audio input devices with their ids."""
    try:
        found = input_devices()
    except CaptureError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(found))
        return
    if not found:
        raise fail("no microphone found; read audio from a file instead: --input FILE")
    table = Table("id", "name", "channels", "rate", title="Input devices")
    for device in found:
        table.add_row(
            str(device["id"]), device["name"], str(device["channels"]), str(device["sample_rate"])
        )
    out.print(table)


STAGE_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan")


def _line_printer(names: list[str]) -> Callable[[str, str], None]:
    width = max(len(n) for n in names)
    colours = {n: STAGE_COLOURS[i % len(STAGE_COLOURS)] for i, n in enumerate(names)}

    def write(stage: str, line: str) -> None:
        prefix = Text(f"{stage:>{width}} | ", style=colours.get(stage, "white"))
        out.print(prefix + Text(line), soft_wrap=True, highlight=False)

    return write


@app.command()
def up(
    stages: Annotated[
        list[str] | None, typer.Option("--stage", "-s", help="Stages to start (default: all).")
    ] = None,
    skip: Annotated[list[str] | None, typer.Option("--skip", help="Stages to leave out.")] = None,
    demo: Annotated[
        bool, typer.Option(help="Also publish a sample chat line and reply tokens.")
    ] = False,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            help="Stages serve /metrics from this port on, one each, in the order listed; 0: off."
        ),
    ] = 9464,
) -> None:
    """Start Redis (embedded unless REDIS_URL is set) and every stage, each a supervised
    process: restarted when it crashes, its log lines prefixed with its name."""
    _setup_logging(False)
    settings = bus_settings()
    _telemetry_settings()  # a bad telemetry setting fails here, not in every stage
    chosen = [s for s in (stages or sorted(STAGES)) if s not in set(skip or [])]
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise fail(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(sorted(STAGES))}")
    if not chosen:
        raise fail("no stage left to start (check --stage and --skip)")
    server: EmbeddedRedis | None = None
    url = settings.redis_url
    if not url:
        try:
            server = EmbeddedRedis(binary=settings.redis_server, persistence=True).start()
        except RedisServerError as exc:
            raise fail(str(exc)) from None
        url = server.url
        STATE_FILE.parent.mkdir(exist_ok=True)
        STATE_FILE.write_text(url)
    console.print(f"Redis at [bold]{url}[/]; stages: {', '.join(chosen)}; Ctrl-C stops")
    ports = {name: metrics_port + i if metrics_port else None for i, name in enumerate(chosen)}
    if metrics_port:
        listed = ", ".join(f"{name} :{port}" for name, port in ports.items())
        console.print(
            f"metrics: http://127.0.0.1:PORT/metrics ({listed}); `marionette trace` "
            "shows the latest turns"
        )
    supervisor = Supervisor(
        {name: stage_command(name, ports[name]) for name in chosen},
        {**os.environ, "REDIS_URL": url},
        _line_printer(chosen),
    )
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    failure: StageFailed | None = None
    try:
        supervisor.start()
        if demo:
            from services.demo import publish_sample_session

            asyncio.run(publish_sample_session(settings.model_copy(update={"redis_url": url})))
        deadline = None if duration is None else time.monotonic() + duration
        while not stopping.is_set() and supervisor.running():
            if deadline is not None and time.monotonic() >= deadline:
                break
            supervisor.poll()
            stopping.wait(0.2)
    except StageFailed as exc:
        failure = exc
    finally:
        console.print("stopping the stages")
        supervisor.stop()
        if server is not None:
            server.close()
            STATE_FILE.unlink(missing_ok=True)
    if failure is not None:
        raise fail(str(failure))


@app.command()
def models(
    names: Annotated[
        list[str] | None, typer.Argument(help="Only these models (default: all).")
    ] = None,
    prepare: Annotated[
        bool, typer.Option("--prepare", help="Join and check every model that is not ready.")
    ] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Recompute the sha256 of joined files too.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """List the bundled models, where they are and whether they are ready; prepare them."""
    from services.models.catalog import ModelStatus, all_models
    from services.models.files import forget_verified

    entries = all_models()
    if names:
        unknown = set(names) - {entry.name for entry in entries}
        if unknown:
            known = ", ".join(entry.name for entry in entries)
            raise fail(f"no model named {', '.join(sorted(unknown))}; known: {known}")
        entries = [entry for entry in entries if entry.name in names]
    if verify:
        forget_verified()
    rows = []
    for entry in entries:
        status = entry.status()
        if (prepare or verify) and status.state == "not prepared":
            try:
                path = entry.prepare(not as_json)
                status = ModelStatus("ready", str(path))
            except ModelMissing as exc:
                status = ModelStatus("missing", str(exc))
        rows.append((entry, status))
    if as_json:
        for entry, status in rows:
            record = {
                "name": entry.name, "used_by": entry.used_by, "size_mb": entry.size_mb,
                "default": entry.default, "state": status.state, "detail": status.detail,
            }  # fmt: skip
            typer.echo(json.dumps(record))
    else:
        table = Table("model", "selected by", "MB", "state", "file or fix")
        for column in table.columns:
            column.overflow = "fold"
        colour = {"ready": "green", "not prepared": "yellow", "missing": "red"}
        for entry, status in rows:
            table.add_row(
                entry.name, entry.used_by, str(entry.size_mb),
                f"[{colour[status.state]}]{status.state}[/]", status.detail,
            )  # fmt: skip
        out.print(table)
    # Optional models (Kokoro) may be absent; a default one missing means a broken install.
    if any(status.state == "missing" and entry.default for entry, status in rows):
        raise typer.Exit(code=1)


@app.command()
def bench(
    utterances: Annotated[int, typer.Option(help="Spoken questions to time.", min=1)] = 6,
    warmup: Annotated[int, typer.Option(help="Turns first, not counted (cold model).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    log: Annotated[Path, typer.Option(help="The stages' log.")] = Path(".marionette/bench.log"),
) -> None:
    """Voice-to-voice latency of the live pipeline: p50/p95, and where the time goes.

    Starts Redis and the stages itself, unless REDIS_URL names a running system."""
    from services.bench.command import run_bench
    from services.bench.live import TurnResult

    _setup_logging(False)
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
    missed = [t for t in report.turns if t.error]
    if missed:
        out.print(f"[red]{len(missed)} turn(s) failed:[/] " + "; ".join(t.error for t in missed))
        raise typer.Exit(code=1)


@app.command("trace")
def trace_command(
    turn: Annotated[
        str | None, typer.Argument(help="A turn id (or the start of one); default: the latest.")
    ] = None,
    last: Annotated[int, typer.Option("--last", "-n", help="How many latest turns.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """Waterfalls of the latest turns (or of one, span by span) from the local span store."""
    from services.telemetry.render import print_spans, print_turn
    from services.telemetry.span_store import read_spans
    from services.telemetry.waterfall import turn_waterfalls

    settings = _telemetry_settings()
    turns = turn_waterfalls(read_spans(settings.trace_dir))
    if not turns:
        raise fail(
            f"no traced turns in {settings.trace_dir}: run `marionette up` and speak (or "
            "chat); MARIONETTE_TELEMETRY_TRACES must be local or both"
        )
    if turn is not None:
        turns = [t for t in turns if t.turn_id == turn] or [
            t for t in turns if t.turn_id.startswith(turn)
        ]
        if not turns:
            raise fail(f"no turn {turn!r} in {settings.trace_dir}; `marionette trace` lists them")
        turns = turns[-1:]
    else:
        turns = turns[-max(last, 1) :]
    if as_json:
        for one in turns:
            typer.echo(json.dumps(one.to_json(with_spans=turn is not None)))
        return
    for one in turns:
        print_turn(out, one)
        if turn is not None:
            print_spans(out, one)


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str | None, typer.Option(help="Only this topic.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many per topic.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """List dead letters: topic, reason, delivery count, consumer."""
    url = existing_redis(bus_settings())

    async def collect() -> list[dlq.DeadLetter]:
        client: Redis = Redis.from_url(url)
        try:
            names = [topic_named(topic).name] if topic else await dlq.dead_letter_topics(client)
            return [
                letter
                for name in names
                for letter in await dlq.list_dead_letters(client, name, limit)
            ]
        finally:
            await client.aclose()

    try:
        letters = asyncio.run(collect())
    except ValueError as exc:
        raise fail(str(exc)) from None
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(letter.as_json()))
        return
    table = Table("id", "topic", "deliveries", "consumer", "reason", title="Dead letters")
    for letter in letters:
        table.add_row(
            letter.dlq_id, letter.topic, str(letter.delivery_count), letter.consumer, letter.reason
        )
    out.print(table)


@dlq_app.command("redrive")
def dlq_redrive(
    topic: Annotated[str, typer.Argument(help="Topic whose dead letters to re-drive.")],
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="Only these dead-letter ids (default: all).")
    ] = None,
) -> None:
    """Put dead letters back on their stream, to be handled again."""
    url = existing_redis(bus_settings())
    try:
        name = topic_named(topic).name
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def go() -> int:
        client: Redis = Redis.from_url(url)
        try:
            return len(await dlq.redrive(client, name, ids))
        finally:
            await client.aclose()

    count = asyncio.run(go())
    out.print(f"re-drove {count} dead letter(s) of {name}")


@app.command()
def asyncapi(
    check: Annotated[bool, typer.Option(help="Fail if the committed document is stale.")] = False,
) -> None:
    """Write contracts/asyncapi.json from the stages' FastStream routers."""
    from services.bus.asyncapi import DOCUMENT_PATH, build_document

    document = build_document([load_stage(name) for name in sorted(STAGES)])
    if check:
        current = DOCUMENT_PATH.read_text() if DOCUMENT_PATH.exists() else ""
        if current != document:
            raise fail(f"{DOCUMENT_PATH} is stale: run `marionette asyncapi` and commit it")
        out.print(f"{DOCUMENT_PATH} is up to date")
        return
    DOCUMENT_PATH.write_text(document)
    out.print(f"wrote {DOCUMENT_PATH} ({len(ALL_TOPICS)} topics)")


if __name__ == "__main__":
    app()


app.command()(record)
app.command()(replay)
