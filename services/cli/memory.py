"""`marionette memory ...`: long-term memory from the command line.

Each command opens the store policy uses (MARIONETTE_MEMORY_*: the sqlite file of this
machine, or with MARIONETTE_MEMORY_STORE=redis the bus's Redis) and changes it directly,
as the gateway's /api/memory routes do; exports are the same JSON files. The embedder
loads only for `search` and `import`. `forget-viewer` also publishes a MemoryForget on the
bus, so policy scrubs the viewer from short-term memory too.
"""

import asyncio
import json
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from contracts import Control
from contracts.control import MemoryForget
from contracts.topics import CONTROL
from services.bus import Producer
from services.bus.connect import bus_client
from services.bus.settings import BusSettings
from services.cli.common import bus_settings, console, existing_redis, fail, out
from services.errors import StageStartError
from services.gateway.link import GLOBAL_SESSION
from services.memory.access import (
    OFF,
    ImportProblem,
    ImportRequest,
    LongTermAccess,
    StoreUnavailable,
    export_document,
    rescoped,
)
from services.memory.items import LongTermBackupInfo, MemoryItem, ScopeStats
from services.memory.settings import MemorySettings
from services.settings import load_settings

memory_app = typer.Typer(
    help="Long-term memory: scopes, search, export and import, backups, forgetting a viewer.",
    no_args_is_help=True,
)
T = TypeVar("T")
SCOPE_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,160}$")  # items.Scope's


def checked_scope(scope: str) -> str:
    if not SCOPE_PATTERN.match(scope):
        raise typer.BadParameter(
            "a scope is character:<persona> or session:<session id> (letters, digits and "
            "._:- only); `marionette memory scopes` lists them"
        )
    return scope


ScopeArgument = Annotated[
    str, typer.Argument(help="e.g. character:default or session:<id>.", callback=checked_scope)
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def memory_settings() -> MemorySettings:
    try:
        return load_settings(MemorySettings)
    except StageStartError as exc:
        raise fail(str(exc)) from None


def with_memory(work: Callable[[LongTermAccess], Awaitable[T]], *, needs_on: bool = True) -> T:
    """Run work against long-term memory as the settings place it, then close it."""
    settings = memory_settings()
    if needs_on and not settings.long_term:
        raise fail(OFF)
    bus: BusSettings | None = None
    if settings.store == "redis":
        bus = bus_settings()
        bus = bus.model_copy(update={"redis_url": existing_redis(bus)})

    async def go() -> T:
        client = bus_client(bus) if bus is not None else None  # a cluster one is refused
        access = LongTermAccess(settings, client)
        try:
            return await work(access)
        finally:
            await access.close()
            if client is not None:
                await client.aclose()

    try:
        return asyncio.run(go())
    except StoreUnavailable as exc:
        raise fail(str(exc)) from None


def when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


def stats_row(stats: ScopeStats) -> list[str]:
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(stats.by_kind.items()))
    return [escape(stats.scope), str(stats.items), kinds or "-", str(stats.authors),
            when(stats.oldest), when(stats.newest)]  # fmt: skip


def stats_table(rows: list[ScopeStats], title: str) -> Table:
    table = Table("scope", "items", "by kind", "viewers", "oldest", "newest", title=title)
    for stats in rows:
        table.add_row(*stats_row(stats))
    return table


@memory_app.command()
def scopes(as_json: JsonOption = False) -> None:
    """Every scope that holds items, with its counts."""

    async def work(access: LongTermAccess) -> list[ScopeStats]:
        store = await access.store()
        return [await store.stats(scope) for scope in await store.scopes()]

    found = with_memory(work)
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in found]))
        return
    if not found:
        out.print("long-term memory holds nothing yet")
        return
    out.print(stats_table(found, "Long-term memory"))


@memory_app.command()
def stats(scope: ScopeArgument, as_json: JsonOption = False) -> None:
    """One scope's counts and its backups."""

    async def work(access: LongTermAccess) -> tuple[ScopeStats, list[LongTermBackupInfo]]:
        store = await access.store()
        return await store.stats(scope), await store.backups(scope)

    counts, kept = with_memory(work)
    if as_json:
        typer.echo(json.dumps({**counts.model_dump(mode="json"), "backups": len(kept)}))
        return
    out.print(stats_table([counts], escape(scope)))
    out.print(f"{len(kept)} backup(s); `marionette memory backups {escape(scope)}` lists them")


@memory_app.command()
def search(
    scope: ScopeArgument,
    query: Annotated[str, typer.Argument(help="Words to search for, by meaning.")],
    limit: Annotated[int, typer.Option(min=1, max=4096, help="At most this many hits.")] = 10,
    author: Annotated[str | None, typer.Option(help="Only this viewer's items.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The scope's items closest to QUERY in meaning, best first, with their similarity."""
    hits = with_memory(lambda access: access.search(scope, query, limit, author=author))
    if as_json:
        typer.echo(json.dumps([hit.model_dump(mode="json") for hit in hits]))
        return
    table = Table(
        "score", "kind", "viewer", "when", "text", title=f"{escape(scope)}: {escape(query)}"
    )
    for hit in hits:
        item = hit.item
        table.add_row(f"{hit.score:.3f}", item.kind, escape(item.author or "-"),
                      when(item.created_at), escape(item.text))  # fmt: skip
    out.print(table)


@memory_app.command()
def export(
    scope: ScopeArgument,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Write the scope's items as JSON (what `import` and the gateway's import take)."""
    items = with_memory(lambda access: _items(access, scope))
    document = json.dumps(export_document(scope, items), indent=2)
    if output is None:
        typer.echo(document)
        return
    try:
        output.write_text(document + "\n")
    except OSError as exc:
        raise fail(f"cannot write {output} ({exc.strerror}): give another --output") from None
    console.print(f"exported {len(items)} item(s) of {escape(scope)} to {escape(str(output))}")


async def _items(access: LongTermAccess, scope: str) -> list[MemoryItem]:
    return await (await access.store()).items(scope)


@memory_app.command("import")
def import_command(
    scope: ScopeArgument,
    file: Annotated[str, typer.Argument(help="An export's JSON file, or - for stdin.")],
) -> None:
    """Add an export's items to SCOPE (each moves to it); what is stored already is left."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        raise fail(f"cannot read {file} ({exc.strerror}): give an export's file") from None
    try:
        request = ImportRequest.model_validate(json.loads(text))
        items = rescoped(scope, request.items)
    except json.JSONDecodeError as exc:
        raise fail(
            f"{file} is not JSON ({exc}): give a file `marionette memory export` wrote"
        ) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise fail(f"{file} is not an export ({problems}): it needs an `items` list") from None
    except ImportProblem as exc:
        raise fail(f"{file}: {exc}") from None
    new = with_memory(lambda access: access.import_items(items))
    out.print(f"imported {len(items)} item(s) into {escape(scope)}: {new} new")


@memory_app.command()
def reset(scope: ScopeArgument, yes: YesOption = False) -> None:
    """Empty SCOPE, keeping a backup first (prints its id; `restore` brings it back)."""
    if not yes:
        typer.confirm(f"Empty long-term memory {scope} (a backup is kept)?", abort=True)
    info = with_memory(lambda access: _reset(access, scope))
    out.print(f"reset {escape(scope)}: {info.items} item(s) kept in backup")
    out.print(info.id)


async def _reset(access: LongTermAccess, scope: str) -> LongTermBackupInfo:
    return await (await access.store()).reset(scope)


@memory_app.command()
def backup(
    scope: ScopeArgument,
    reason: Annotated[str, typer.Option(help="Kept with the backup.")] = "on request",
) -> None:
    """Keep a backup of SCOPE as it is now (prints its id)."""
    info = with_memory(lambda access: _backup(access, scope, reason))
    out.print(f"backed up {info.items} item(s) of {escape(scope)}")
    out.print(info.id)


async def _backup(access: LongTermAccess, scope: str, reason: str) -> LongTermBackupInfo:
    return await (await access.store()).backup(scope, reason)


@memory_app.command()
def backups(scope: ScopeArgument, as_json: JsonOption = False) -> None:
    """SCOPE's backups, newest first."""
    kept = with_memory(lambda access: _backups(access, scope))
    if as_json:
        typer.echo(json.dumps([info.model_dump(mode="json") for info in kept]))
        return
    if not kept:
        out.print(f"{escape(scope)} has no backups (`marionette memory backup` makes one)")
        return
    table = Table("id", "made", "items", "reason", title=f"Backups of {escape(scope)}")
    for column in table.columns[:1]:
        column.no_wrap = True
    for info in kept:
        table.add_row(info.id, when(info.made_at), str(info.items), escape(info.reason))
    out.print(table)


async def _backups(access: LongTermAccess, scope: str) -> list[LongTermBackupInfo]:
    return await (await access.store()).backups(scope)


@memory_app.command()
def restore(
    scope: ScopeArgument,
    backup_id: Annotated[str, typer.Argument(help="From `marionette memory backups SCOPE`.")],
    yes: YesOption = False,
) -> None:
    """Replace SCOPE's items with a backup's (what it holds now is replaced: `backup` first
    to keep it)."""

    async def check(access: LongTermAccess) -> tuple[bool, int]:
        store = await access.store()
        known = any(info.id == backup_id for info in await store.backups(scope))
        return known, (await store.stats(scope)).items

    known, held = with_memory(check)
    if not known:
        raise fail(f"{scope} has no backup {backup_id}: `marionette memory backups {scope}`")
    if held and not yes:
        typer.confirm(f"Replace the {held} item(s) {scope} holds now?", abort=True)

    async def work(access: LongTermAccess) -> int:
        return await (await access.store()).restore(scope, backup_id)

    try:
        count = with_memory(work)
    except KeyError:  # gone in between (a newer backup pushed it out)
        raise fail(
            f"{scope} has no backup {backup_id}: `marionette memory backups {scope}`"
        ) from None
    out.print(f"restored {escape(scope)} from {escape(backup_id)}: {count} item(s)")


@memory_app.command("forget-viewer")
def forget_viewer(
    author: Annotated[str, typer.Argument(help="The viewer's name, as their chat lines carry it.")],
    yes: YesOption = False,
) -> None:
    """A privacy request: delete everything remembered of AUTHOR. Their long-term items go
    now (every scope, backups too); policy scrubs short-term memory on the MemoryForget this
    publishes."""
    if not 1 <= len(author) <= 64:
        raise fail("a viewer's name is 1 to 64 characters, as their chat lines carry it")
    if not yes:
        typer.confirm(f"Forget everything remembered of {author}? This cannot be undone.",
                      abort=True)  # fmt: skip
    # Redis first: a request that cannot reach policy should fail before deleting anything.
    bus = bus_settings()
    bus = bus.model_copy(update={"redis_url": existing_redis(bus)})
    settings = memory_settings()
    items = 0
    if settings.long_term:
        items = with_memory(lambda access: _forget(access, author))
    entry = asyncio.run(publish_forget(bus, author))
    out.print(f"forgot {escape(author)}: {items} long-term item(s) deleted")
    out.print(
        f"published MemoryForget on {CONTROL.name} ({entry}): policy scrubs short-term memory"
    )


async def _forget(access: LongTermAccess, author: str) -> int:
    return await (await access.store()).delete_author(author)


async def publish_forget(bus: BusSettings, author: str) -> str:
    """Publish the MemoryForget as the gateway would (the session of whole-character control)."""
    message = Control(
        session_id=GLOBAL_SESSION, message_id=f"cli-forget-{uuid.uuid4().hex[:16]}:0", seq=0,
        command=MemoryForget(author=author),
    )  # fmt: skip
    async with Producer(bus, "cli", [CONTROL]) as producer:
        entry = await producer.publish(message)
    return entry.decode() if entry else "-"
