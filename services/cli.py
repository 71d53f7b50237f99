"""`marionette`: run stages, inspect dead letters, keep the AsyncAPI document current."""

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import redis
import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from contracts.topics import ALL_TOPICS, topic_named
from services.bus import ConfigError, load_bus_settings
from services.bus import dead_letters as dlq
from services.bus.redis_server import EmbeddedRedis, RedisServerError
from services.bus.settings import BusSettings, load_settings
from services.capture.settings import CaptureSettings
from services.capture.sources import CaptureError, input_devices
from services.models import ModelMissing
from services.policy.backends import BackendUnavailable
from services.policy.moderation import RulesError
from services.policy.persona import PersonaError
from services.registry import STAGES, StageMain, load_stage, stage_main

POLICY_ERRORS = (BackendUnavailable, ModelMissing, RulesError, PersonaError)

app = typer.Typer(help="Marionette: a live AI character on Redis Streams.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
console = Console(stderr=True)
out = Console()

STATE_FILE = Path(".marionette/redis.url")
"""Where `marionette up` leaves the URL of its embedded Redis for the other commands."""


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {message}")
    return typer.Exit(code=2)


def _settings(**overrides: object) -> BusSettings:
    try:
        return load_bus_settings(**overrides)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)],
    )
    for noisy in ("faststream", "faststream.access.redis", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _existing_redis(settings: BusSettings) -> str:
    """REDIS_URL, or the embedded Redis of a running `marionette up`."""
    if settings.redis_url:
        return settings.redis_url
    if STATE_FILE.exists():
        url = STATE_FILE.read_text().strip()
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return url
        except redis.RedisError:
            pass
    raise _fail("no Redis to talk to: set REDIS_URL, or start `marionette up` in this folder")


@app.command()
def run(
    stage: Annotated[str, typer.Argument(help=f"One of: {', '.join(sorted(STAGES))}")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one stage in this process (an embedded Redis when REDIS_URL is not set)."""
    _setup_logging(verbose)
    settings = _settings()
    try:
        main = stage_main(stage)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    server: EmbeddedRedis | None = None
    if not settings.redis_url:
        try:
            server = EmbeddedRedis(binary=settings.redis_server).start()
        except RedisServerError as exc:
            raise _fail(str(exc)) from None
        console.print(f"embedded Redis at {server.url} (set REDIS_URL to share one)")
        settings = settings.model_copy(update={"redis_url": server.url})
    try:
        asyncio.run(_run_until_signal(main, settings))
    except (ConfigError, CaptureError, *POLICY_ERRORS) as exc:
        raise _fail(str(exc)) from None
    finally:
        if server is not None:
            server.close()


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
    bus = _settings()
    bus = bus.model_copy(update={"redis_url": _existing_redis(bus)})
    overrides = {"input": input, "device": device, "session_id": session}
    try:
        settings = load_settings(
            CaptureSettings, **{k: v for k, v in overrides.items() if v is not None}
        )
        if fast:
            settings = settings.model_copy(update={"realtime": False})
        count = asyncio.run(run_capture(bus, settings))
    except (ConfigError, CaptureError) as exc:
        raise _fail(str(exc)) from None
    out.print(f"published {count} frames to session {settings.session_id}")


@app.command()
def devices(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """List audio input devices with their ids."""
    try:
        found = input_devices()
    except CaptureError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(found))
        return
    table = Table("id", "name", "channels", "rate", title="Input devices")
    for device in found:
        table.add_row(
            str(device["id"]), device["name"], str(device["channels"]), str(device["sample_rate"])
        )
    out.print(table)


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
) -> None:
    """Start Redis (embedded unless REDIS_URL is set) and every stage, each as a process."""
    _setup_logging(False)
    settings = _settings()
    chosen = [s for s in (stages or sorted(STAGES)) if s not in set(skip or [])]
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise _fail(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(sorted(STAGES))}")
    server: EmbeddedRedis | None = None
    url = settings.redis_url
    if not url:
        try:
            server = EmbeddedRedis(binary=settings.redis_server, persistence=True).start()
        except RedisServerError as exc:
            raise _fail(str(exc)) from None
        url = server.url
        STATE_FILE.parent.mkdir(exist_ok=True)
        STATE_FILE.write_text(url)
    console.print(f"Redis at [bold]{url}[/]; stages: {', '.join(chosen)}; Ctrl-C stops")
    env = {**os.environ, "REDIS_URL": url}
    children = {
        name: subprocess.Popen([sys.executable, "-m", "services", "run", name], env=env)
        for name in chosen
    }
    try:
        if demo:
            from services.demo import publish_sample_session

            asyncio.run(publish_sample_session(settings.model_copy(update={"redis_url": url})))
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children.values():
            child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if server is not None:
            server.close()
            STATE_FILE.unlink(missing_ok=True)


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str | None, typer.Option(help="Only this topic.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many per topic.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """List dead letters: topic, reason, delivery count, consumer."""
    url = _existing_redis(_settings())

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
        raise _fail(str(exc)) from None
    if as_json:
        for letter in letters:
            out.print_json(json.dumps(letter.as_json()))
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
    url = _existing_redis(_settings())
    try:
        name = topic_named(topic).name
    except ValueError as exc:
        raise _fail(str(exc)) from None

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
            raise _fail(f"{DOCUMENT_PATH} is stale: run `marionette asyncapi` and commit it")
        out.print(f"{DOCUMENT_PATH} is up to date")
        return
    DOCUMENT_PATH.write_text(document)
    out.print(f"wrote {DOCUMENT_PATH} ({len(ALL_TOPICS)} topics)")


if __name__ == "__main__":
    app()
