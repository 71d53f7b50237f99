"""`marionette vts list [--write FILE]`: the loaded model's hotkeys and expressions, and a
mapping file to fill in (services.vts.mapping) with a table per expression tag of the
persona."""

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.policy.persona import load_persona_file
from services.policy.settings import PolicySettings
from services.settings import load_settings
from services.vts.api import Expression, Hotkey, VtsError, VtsLink
from services.vts.mapping import mapping_template
from services.vts.settings import URL_VARIABLE, VtsSettings

vts_app = typer.Typer(help="VTube Studio: what the model offers, for the mapping file.")


@vts_app.command("list")
def list_model(
    write: Annotated[
        Path | None, typer.Option(help="Write a mapping file to fill in (not over an old one).")
    ] = None,
    url: Annotated[str | None, typer.Option(help=f"Default: {URL_VARIABLE}.")] = None,
) -> None:
    """Connect to VTube Studio (the first time, allow Marionette in its popup) and list the
    model's hotkeys and expressions."""
    settings = load_settings(VtsSettings)
    address = url or settings.url or "ws://127.0.0.1:8001"
    console = Console()
    try:
        model, hotkeys, expressions = asyncio.run(_read_model(address, settings))
    except VtsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    table = Table(title=f"Hotkeys of {model or '(no model loaded)'}")
    for column in ("name", "type", "file", "hotkeyID"):
        table.add_column(column)
    for hotkey in hotkeys:
        table.add_row(hotkey.name, hotkey.type, hotkey.file, hotkey.hotkey_id)
    console.print(table)
    console.print("Expressions: " + (", ".join(e.file for e in expressions) or "(none)"))
    if write is not None:
        if write.exists():
            console.print(f"[red]{write} exists; choose another file[/red]")
            raise typer.Exit(1)
        tags = load_persona_file(load_settings(PolicySettings).persona_file).expressions
        write.write_text(mapping_template(model, hotkeys, expressions, tags), encoding="utf-8")
        console.print(f"Wrote {write}: check it, then set MARIONETTE_VTS_MAPPING_FILE={write}")


async def _read_model(
    url: str, settings: VtsSettings
) -> tuple[str, list[Hotkey], list[Expression]]:
    link = VtsLink(url, settings.token_file, request_timeout_s=settings.request_timeout_s,
                   token_wait_s=settings.token_wait_s)  # fmt: skip
    try:
        model = await link.connect()
        return model, await link.hotkeys(), await link.expressions()
    finally:
        await link.close()
