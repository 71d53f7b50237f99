"""twitch settings: MARIONETTE_TWITCH_* (or [twitch] in marionette.toml).

The stage is optional: `marionette up` starts it only when `channel` is set (configured()).
The three base URLs default to Twitch's own; a test points them at the stand-in
(tests/standins/twitch.py).
"""

import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from contracts.envelope import Identifier
from services.settings import MarionetteSettings, load_settings

TWITCH_CHAT_MAX_CHARS = 500
"""Twitch refuses a chat message longer than this."""


class TwitchSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_TWITCH_")
    toml_table: ClassVar[str | None] = "twitch"

    channel: str = Field(
        default="",
        description="The broadcaster's login (the channel whose chat is read); "
        "empty: the twitch stage is not configured and `up` leaves it out.",
    )
    client_id: str = Field(
        default="", description="The Client ID of your application at dev.twitch.tv/console."
    )
    client_secret: SecretStr = Field(
        default=SecretStr(""),
        description="The application's Client Secret: needed to refresh the access token.",
    )
    access_token: SecretStr = Field(
        default=SecretStr(""),
        description="A user access token of the bot account, with the scopes user:read:chat "
        "(and user:write:chat to answer in chat).",
    )
    refresh_token: SecretStr = Field(
        default=SecretStr(""),
        description="The refresh token that came with the access token: the stage renews "
        "the access token with it when Twitch says it expired.",
    )
    bot_id: str = Field(
        default="",
        description="The bot account's user id; empty: taken from the token (validate).",
    )
    session_id: Identifier = Field(
        default="local", description="The session chat lines and commands go to."
    )
    reply_in_chat: bool = Field(
        default=False,
        description="Post the character's answers to Twitch lines back into chat, as replies.",
    )
    reply_max_chars: int = Field(
        default=300,
        ge=20,
        le=TWITCH_CHAT_MAX_CHARS,
        description="Longest answer posted in chat (Twitch allows 500); longer ones are "
        "cut at a sentence or word.",
    )
    chat_rate_messages: int = Field(
        default=20,
        ge=1,
        le=100,
        description="At most this many messages posted per chat_rate_window_s (Twitch: 20 "
        "per 30 s for a bot that is not a moderator, 100 for one that is).",
    )
    chat_rate_window_s: float = Field(
        default=30.0, gt=0, le=3600, description="The window of chat_rate_messages."
    )
    command_prefix: str = Field(
        default="!", min_length=1, max_length=4, description="What starts a command line."
    )
    token_file: Path = Field(
        default=Path(".marionette/twitch-token.json"),
        description="Where refreshed tokens are kept, so a restart uses the newest.",
    )
    api_url: str = Field(
        default="https://api.twitch.tv/helix/", description="Twitch's Helix API base URL."
    )
    oauth_url: str = Field(
        default="https://id.twitch.tv/",
        description="Twitch's OAuth base URL (oauth2/validate, oauth2/token).",
    )
    eventsub_url: str = Field(
        default="wss://eventsub.wss.twitch.tv/ws", description="Twitch's EventSub WebSocket."
    )

    @field_validator("channel")
    @classmethod
    def _login(cls, value: str) -> str:
        login = value.strip().lstrip("#@").lower()
        if login and not re.fullmatch(r"[a-z0-9_]{1,25}", login):
            raise ValueError("a Twitch login: 1 to 25 letters, digits or underscores")
        return login

    @field_validator("api_url", "oauth_url")
    @classmethod
    def _ends_with_slash(cls, value: str) -> str:
        # twitchio appends paths straight to its bases (Route.BASE + path).
        return value if value.endswith("/") else value + "/"

    @classmethod
    def configured(cls) -> bool:
        """Whether a channel is set (registry.OPTIONAL_STAGES): `up` starts the stage then."""
        return bool(load_settings(cls).channel)
