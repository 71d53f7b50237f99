"""`marionette run` (one stage in this process) and `marionette up` (all of them)."""

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.text import Text

from services.bus import StageRuntime
from services.bus.server import redis_for
from services.bus.settings import BusSettings
from services.cli.common import STATE_FILE, bus_settings, console, fail, out
from services.errors import StageStartError
from services.gateway.settings import GatewaySettings
from services.logs import setup_logging
from services.registry import STAGES, default_stages, stage_class
from services.settings import load_settings
from services.supervisor import (
    STANDBY_ENV,
    StageFailed,
    Supervisor,
    notify_prepared,
    notify_ready,
    supervised,
)
from services.system import stage_children
from services.telemetry.metrics import serve_metrics
from services.telemetry.settings import TelemetrySettings
from services.telemetry.setup import stage_telemetry

STAGE_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan")


def telemetry_settings(metrics_port: int | None = None) -> TelemetrySettings:
    overrides = {} if metrics_port is None else {"metrics_port": metrics_port}
    try:
        return load_settings(TelemetrySettings, **overrides)
    except StageStartError as exc:
        raise fail(str(exc)) from None


def run(
    stage: Annotated[str, typer.Argument(help=f"One of: {', '.join(sorted(STAGES))}")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus /metrics here (MARIONETTE_TELEMETRY_METRICS_PORT)."),
    ] = None,
) -> None:
    """Run one stage in this process (an embedded Redis when REDIS_URL is not set)."""
    try:
        setup_logging(verbose=verbose, stage=stage, console=console, plain=supervised())
        stage_cls = stage_class(stage)
    except (KeyError, StageStartError) as exc:
        raise fail(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
    if stage_cls.niceness > 0:
        os.nice(stage_cls.niceness)
    settings = bus_settings()
    telemetry = telemetry_settings(metrics_port)
    standby = os.environ.get(STANDBY_ENV) == "1"
    # A spare serves /metrics once it serves: the port is its predecessor's until then.
    traced = telemetry.model_copy(update={"metrics_port": 0}) if standby else telemetry
    try:
        with redis_for(settings) as ready_settings, stage_telemetry(stage, traced):
            if not settings.redis_url:
                console.print(
                    f"embedded Redis at {ready_settings.redis_url} (set REDIS_URL to share one)"
                )
            runtime = StageRuntime(stage_cls, ready_settings)
            asyncio.run(_run_until_signal(runtime, telemetry if standby else None))
    except StageStartError as exc:
        raise fail(str(exc)) from None


async def _run_until_signal(
    runtime: StageRuntime,  # type: ignore[type-arg]
    spare_of: TelemetrySettings | None,
) -> None:
    """spare_of: this is a spare of `marionette up` (prepared, it serves when the supervisor
    says so), with the telemetry it takes on then."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    standby = None
    if spare_of is not None:
        standby = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, standby.set)

    def serving() -> None:
        if spare_of is not None and spare_of.metrics_port:
            serve_metrics(spare_of.metrics_port, spare_of.metrics_host)
        notify_ready()

    await runtime.run(stop, ready=serving, standby=standby, prepared=notify_prepared)


def parse_scale(values: list[str] | None) -> dict[str, int]:
    """--scale tts=2 --scale policy=2 -> {"tts": 2, "policy": 2}."""
    scale: dict[str, int] = {}
    for value in values or []:
        name, _, count = value.partition("=")
        if name not in STAGES or not count.isdigit() or not 1 <= int(count) <= 16:
            raise fail(f"--scale {value!r}: write STAGE=N with N from 1 to 16, STAGE one of "
                       f"{', '.join(sorted(STAGES))}")  # fmt: skip
        scale[name] = int(count)
    return scale


def line_printer(names: list[str]) -> Callable[[str, str], None]:
    width = max(len(n) for n in names)
    colours = {n: STAGE_COLOURS[i % len(STAGE_COLOURS)] for i, n in enumerate(names)}

    def write(stage: str, line: str) -> None:
        prefix = Text(f"{stage:>{width}} | ", style=colours.get(stage, "white"))
        out.print(prefix + Text(line), soft_wrap=True, highlight=False)

    return write


def up(
    stages: Annotated[
        list[str] | None, typer.Option("--stage", "-s", help="Stages to start (default: all).")
    ] = None,
    skip: Annotated[list[str] | None, typer.Option("--skip", help="Stages to leave out.")] = None,
    scale: Annotated[
        list[str] | None,
        typer.Option(help="Replicas of a stage, STAGE=N (repeat): they share its sessions."),
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="Once the stages are up, say hello to the character in chat.")
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
    spares: Annotated[
        bool,
        typer.Option(
            help="A prepared spare beside each stage, which takes over at once when it dies "
            "(memory for a second copy of each model)."
        ),
    ] = True,
) -> None:
    """Start Redis (embedded unless REDIS_URL is set) and every stage, each a supervised
    process: replaced when it dies, its log lines prefixed with its name."""
    setup_logging(console=console)
    settings = bus_settings()
    telemetry_settings()  # a bad telemetry setting fails here, not in every stage
    if "gateway" in (stages or STAGES) and "gateway" not in (skip or []):
        try:
            load_settings(GatewaySettings)  # likewise a bad gateway setting (a missing key)
        except StageStartError as exc:
            raise fail(str(exc)) from None
    try:
        everything = stages or default_stages()
    except StageStartError as exc:
        raise fail(str(exc)) from None
    chosen = [s for s in everything if s not in set(skip or [])]
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise fail(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(sorted(STAGES))}")
    if not chosen:
        raise fail("no stage left to start (check --stage and --skip)")
    replicas = {name: 1 for name in chosen} | parse_scale(scale)
    commands, child_env = stage_children(replicas, metrics_port)
    try:
        with redis_for(settings, keep_data=True) as ready_settings:
            _supervise(
                ready_settings, settings, commands, child_env, metrics_port, demo, duration,
                spares,
            )  # fmt: skip
    except StageStartError as exc:
        raise fail(str(exc)) from None


def announce_ready(commands: dict[str, list[str]], after_s: float) -> None:
    """Every stage serves, its models loaded and warmed up, and every spare is prepared:
    the first turn is as fast as any other from now on."""
    how = []
    if "capture" in commands:
        how.append("speak (or the sample input plays)")
    if any(name.startswith("gateway") for name in commands):
        how.append(f"open {load_settings(GatewaySettings).url}/")
    how.append("`marionette chat TEXT`")
    console.print(
        f"[bold green]ready to talk[/] ({after_s:.1f} s after start): " + ", or ".join(how)
    )


def _supervise(
    settings: BusSettings,
    configured: BusSettings,
    commands: dict[str, list[str]],
    child_env: dict[str, dict[str, str]],
    metrics_port: int,
    demo: bool,
    duration: float | None,
    spares: bool,
) -> None:
    url = settings.redis_url or ""
    where = "" if configured.redis_url else f" (its data in {settings.redis_dir})"
    if not configured.redis_url:
        STATE_FILE.parent.mkdir(exist_ok=True)
        STATE_FILE.write_text(url)
    console.print(f"Redis at [bold]{url}[/]{where}; stages: {', '.join(commands)}; Ctrl-C stops")
    if any(name.startswith("gateway") for name in commands):
        gateway = load_settings(GatewaySettings)
        console.print(f"gateway: [bold]{gateway.url}/[/] (API docs at {gateway.url}/api/docs)")
    if metrics_port:
        listed = ", ".join(f"{name} :{metrics_port + i}" for i, name in enumerate(commands))
        console.print(
            f"metrics: http://127.0.0.1:PORT/metrics ({listed}); `marionette trace` "
            "shows the latest turns"
        )
    greeted = not demo
    started = time.monotonic()
    announced = False

    def on_ready(child: object) -> None:
        nonlocal greeted
        name = getattr(child, "name", "")
        if not greeted and "policy" in name:
            greeted = True
            from services.cli.inputs import send_chat

            threading.Thread(
                target=send_chat, args=(settings, "hi Marionette!"), daemon=True
            ).start()

    supervisor = Supervisor(
        commands, {**os.environ, "REDIS_URL": url}, line_printer(list(commands)),
        child_env=child_env, on_ready=on_ready, spares=spares,
    )  # fmt: skip
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    failure: StageFailed | None = None
    try:
        supervisor.start()
        deadline = None if duration is None else time.monotonic() + duration
        while not stopping.is_set() and supervisor.running():
            if deadline is not None and time.monotonic() >= deadline:
                break
            supervisor.poll()
            if not announced and supervisor.settled():
                announced = True
                announce_ready(commands, time.monotonic() - started)
            stopping.wait(0.05)
    except StageFailed as exc:
        failure = exc
    finally:
        console.print("stopping the stages")
        supervisor.stop()
        if not configured.redis_url:
            STATE_FILE.unlink(missing_ok=True)
    if failure is not None:
        raise fail(str(failure))
