"""What the `marionette` commands share: their consoles, errors, and finding Redis."""

from pathlib import Path

import redis
import typer
from rich.console import Console
from rich.markup import escape

from services.bus.settings import BusSettings, load_bus_settings
from services.errors import ConfigError

console = Console(stderr=True)
out = Console()

STATE_FILE = Path(".marionette/redis.url")
"""Where `marionette up` leaves the URL of its embedded Redis for the other commands."""


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code=2)


def bus_settings(**overrides: object) -> BusSettings:
    try:
        return load_bus_settings(**overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def existing_redis(settings: BusSettings) -> str:
    """REDIS_URL, or the embedded Redis of a running `marionette up`."""
    if settings.redis_url:
        try:
            redis.Redis.from_url(settings.redis_url, socket_timeout=3).ping()
        except redis.RedisError as exc:
            raise fail(f"Redis at REDIS_URL={settings.redis_url} does not answer: {exc}") from None
        return settings.redis_url
    if STATE_FILE.exists():
        url = STATE_FILE.read_text().strip()
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return url
        except redis.RedisError:
            pass
    raise fail("no Redis to talk to: set REDIS_URL, or start `marionette up` in this folder")
