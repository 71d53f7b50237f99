"""Looking inside: `marionette models`, `trace`, `dlq`, and the generated documents."""

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from redis.asyncio import Redis
from rich.table import Table

from contracts.topics import topic_named
from services.bus import dead_letters as dlq
from services.bus.connect import bus_client
from services.cli.common import bus_settings, existing_redis, fail, out
from services.cli.stages import telemetry_settings
from services.models import ModelMissing
from services.registry import STAGES, stage_class

dlq_app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)


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

    settings = telemetry_settings()
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
    settings = bus_settings()
    settings = settings.model_copy(update={"redis_url": existing_redis(settings)})

    async def collect() -> list[dlq.DeadLetter]:
        client = bus_client(settings)  # a cluster client on a Redis Cluster
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


def asyncapi(
    check: Annotated[bool, typer.Option(help="Fail if the committed document is stale.")] = False,
) -> None:
    """Write contracts/asyncapi.json from the stages' FastStream routers."""
    from services.bus.asyncapi import DOCUMENT_PATH, build_document

    document = build_document([stage_class(name) for name in sorted(STAGES)])
    _write_or_check(DOCUMENT_PATH, document, "asyncapi", check)


def docs(
    check: Annotated[bool, typer.Option(help="Fail if the committed pages are stale.")] = False,
) -> None:
    """Write docs/settings.md from the settings classes (every variable, its default) and
    contracts/openapi.json from the gateway's routes."""
    from services.gateway.app import OPENAPI_PATH, openapi_document
    from services.settings_reference import DOCUMENT_PATH, settings_reference

    _write_or_check(DOCUMENT_PATH, settings_reference(), "docs", check)
    _write_or_check(OPENAPI_PATH, openapi_document(), "docs", check)


def _write_or_check(path: Path, document: str, command: str, check: bool) -> None:
    """Generated documents are committed; CI runs the command with --check so they stay true."""
    if check:
        current = path.read_text() if path.exists() else ""
        if current != document:
            raise fail(f"{path} is stale: run `marionette {command}` and commit it")
        out.print(f"{path} is up to date")
        return
    path.parent.mkdir(exist_ok=True)
    path.write_text(document)
    out.print(f"wrote {path}")
