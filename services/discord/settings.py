"""discord settings: MARIONETTE_DISCORD_* (or [discord] in marionette.toml)."""

from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints
from pydantic_settings import SettingsConfigDict

from services.settings import MarionetteSettings, load_settings

DISCORD_API_URL = "https://discord.com/api/v10"
TOKEN_VARIABLE = "MARIONETTE_DISCORD_TOKEN"
CHANNELS_VARIABLE = "MARIONETTE_DISCORD_CHANNELS"


class DiscordSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_DISCORD_")
    toml_table: ClassVar[str | None] = "discord"

    token: str = Field(
        default="",
        description="The bot's token (Developer Portal, Bot, Reset Token); empty: the "
        "discord stage is not configured and `up` leaves it out.",
    )
    channels: list[int] = Field(
        default_factory=list,
        description="Ids of the text channels the bot reads and answers in, as JSON "
        "([111, 222]); none: the stage refuses to start rather than read every channel.",
    )
    session_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:\-]{1,64}$")] = Field(
        default="local", description="The session Discord lines join (the live character's)."
    )
    reply: bool = Field(
        default=True, description="Post the character's answers in the channel, as replies."
    )
    reply_max_chars: int = Field(
        default=1500, ge=20, le=2000,
        description="Longer answers are cut at a sentence or word (Discord allows 2000).",
    )  # fmt: skip
    reply_burst: int = Field(
        default=5, ge=1, le=50, description="Replies a channel may get at once, before pacing."
    )
    reply_interval_s: float = Field(
        default=1.0, ge=0, le=60,
        description="After a burst, one reply per this many seconds per channel.",
    )  # fmt: skip
    command_prefix: Annotated[str, StringConstraints(min_length=1, max_length=4)] = Field(
        default="!", description="What starts a command (!join, !leave, !skip, !panic)."
    )
    voice: bool = Field(default=True, description="Allow !join: speak in a voice channel.")
    voice_connect_timeout_s: float = Field(
        default=20, gt=0, le=120, description="How long !join waits for the voice handshake."
    )
    start_timeout_s: float = Field(
        default=30, gt=0, le=300, description="How long the stage waits for the gateway's READY."
    )
    api_url: str = Field(
        default=DISCORD_API_URL,
        description="Discord's REST API (discord.http.Route.BASE); the tests point it at a "
        "stand-in.",
    )
    gateway_url: str = Field(
        default="",
        description="Discord's gateway websocket; empty: the URL GET /gateway/bot gives.",
    )

    @classmethod
    def configured(cls) -> bool:
        """Whether `up` starts the stage: a token is set."""
        return bool(load_settings(cls).token.strip())
