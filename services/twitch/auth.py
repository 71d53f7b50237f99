"""The bot's tokens: which to start with, where refreshed ones are kept, what to say when
they are missing or refused.

Twitch access tokens expire (about four hours for a user token); the refresh token that
came with one gets a new pair. A refreshed pair is written to `token_file`, so a restart
starts from it rather than from the expired token in the settings. The file remembers
which configured token it grew from (a hash): set a new token in the settings and the file
is ignored.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from services.errors import StageStartError
from services.twitch.settings import TwitchSettings

log = logging.getLogger("marionette.twitch")

READ_SCOPE = "user:read:chat"
WRITE_SCOPE = "user:write:chat"

HOW_TO_GET_A_TOKEN = (
    "get a user access token for the bot account (log in to Twitch as the bot) with the "
    f"scopes {READ_SCOPE} and {WRITE_SCOPE}, for example with the Twitch CLI: "
    f"`twitch token -u -s '{READ_SCOPE} {WRITE_SCOPE}'` (it prints an access token and a "
    "refresh token), then set MARIONETTE_TWITCH_ACCESS_TOKEN and "
    "MARIONETTE_TWITCH_REFRESH_TOKEN (and MARIONETTE_TWITCH_CLIENT_SECRET, so the stage can "
    "refresh it); see docs/twitch.md"
)


class TwitchAuthError(StageStartError):
    """Missing or refused Twitch credentials; the message names the setting and the fix."""


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str


def _origin(configured: str) -> str:
    return hashlib.sha256(configured.encode()).hexdigest()[:16]


def check_settings(settings: TwitchSettings) -> None:
    """Raise TwitchAuthError for what is missing before asking Twitch anything."""
    if not settings.channel:
        raise TwitchAuthError(
            "MARIONETTE_TWITCH_CHANNEL is not set: set it to the login of the channel whose "
            "chat the character reads (e.g. MARIONETTE_TWITCH_CHANNEL=mychannel)"
        )
    if not settings.client_id:
        raise TwitchAuthError(
            "MARIONETTE_TWITCH_CLIENT_ID is not set: register an application at "
            "https://dev.twitch.tv/console/apps and set its Client ID (and its Client Secret "
            "as MARIONETTE_TWITCH_CLIENT_SECRET)"
        )
    if not settings.client_secret.get_secret_value():
        raise TwitchAuthError(
            "MARIONETTE_TWITCH_CLIENT_SECRET is not set: copy the Client Secret of your "
            "application (https://dev.twitch.tv/console/apps, Manage, New Secret); the stage "
            "needs it to renew the bot's token"
        )
    if not settings.access_token.get_secret_value() and saved_tokens(settings) is None:
        raise TwitchAuthError(f"MARIONETTE_TWITCH_ACCESS_TOKEN is not set: {HOW_TO_GET_A_TOKEN}")


def saved_tokens(settings: TwitchSettings) -> Tokens | None:
    """The refreshed pair in token_file, if it grew from the configured token (or no token is
    configured)."""
    try:
        data = json.loads(settings.token_file.read_text())
        tokens = Tokens(str(data["access_token"]), str(data.get("refresh_token", "")))
        origin = str(data.get("origin", ""))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("twitch: ignoring %s (%s)", settings.token_file, exc)
        return None
    configured = settings.access_token.get_secret_value()
    if configured and origin != _origin(configured):
        return None  # a new token was configured since: it wins
    return tokens if tokens.access else None


def starting_tokens(settings: TwitchSettings) -> Tokens:
    saved = saved_tokens(settings)
    if saved is not None:
        log.info("twitch: starting from the refreshed token in %s", settings.token_file)
        return saved
    configured = settings.access_token, settings.refresh_token
    return Tokens(configured[0].get_secret_value(), configured[1].get_secret_value())


def save_tokens(settings: TwitchSettings, user_id: str, tokens: Tokens) -> None:
    """Keep a refreshed pair (readable by this user only: it is a password)."""
    path: Path = settings.token_file
    data = {
        "user_id": user_id,
        "access_token": tokens.access,
        "refresh_token": tokens.refresh,
        "origin": _origin(settings.access_token.get_secret_value()),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(data, file)
        temporary.replace(path)  # whole or not at all, even if the stage dies meanwhile
    except OSError as exc:
        log.error("twitch: cannot keep the refreshed token in %s: %s", path, exc)
