"""`marionette redis-acl`: the Redis users a deployment runs with (services.bus.acl)."""

from pathlib import Path
from typing import Annotated

import typer

from services.bus.acl import acl_file, env_file, new_passwords, passwords_from_env
from services.cli.common import fail, out
from services.errors import ConfigError


def redis_acl(
    new_env: Annotated[
        bool, typer.Option(help="Print new random passwords as an env file instead.")
    ] = False,
    to: Annotated[
        Path | None, typer.Option("--out", help="Write the ACL file here (default: print it).")
    ] = None,
) -> None:
    """The Redis ACL file (a user per stage) from the REDIS_PASSWORD_* variables."""
    if new_env:
        typer.echo(env_file(new_passwords()), nl=False)
        return
    try:
        text = acl_file(passwords_from_env())
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if to is None:
        typer.echo(text, nl=False)
        return
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_text(text)
    to.chmod(0o600)
    out.print(f"wrote {to}")
