"""Why the discord stage cannot start, each with the fix."""

from services.discord.settings import CHANNELS_VARIABLE, TOKEN_VARIABLE
from services.errors import StageStartError

PORTAL = "https://discord.com/developers/applications"


class DiscordStartError(StageStartError):
    """The discord stage cannot start as configured."""


class DiscordTokenError(DiscordStartError):
    """No token, or one Discord refuses."""

    @classmethod
    def missing(cls) -> "DiscordTokenError":
        return cls(
            f"{TOKEN_VARIABLE} is not set: create a bot at {PORTAL} (your application, Bot, "
            f"Reset Token) and set {TOKEN_VARIABLE} to its token (see docs/discord.md)"
        )

    @classmethod
    def rejected(cls, api_url: str) -> "DiscordTokenError":
        return cls(
            f"Discord ({api_url}) refused the bot token in {TOKEN_VARIABLE}: it is wrong or "
            f"was reset. Copy a new one from {PORTAL} (your application, Bot, Reset Token) "
            f"into {TOKEN_VARIABLE}"
        )


class DiscordIntentError(DiscordStartError):
    """The bot may not read message text (a privileged intent is off)."""

    def __init__(self) -> None:
        super().__init__(
            "the bot may not read message text: turn on 'Message Content Intent' at "
            f"{PORTAL} (your application, Bot, Privileged Gateway Intents) and save; the "
            f"token in {TOKEN_VARIABLE} stays the same"
        )


class DiscordUnreachable(DiscordStartError):
    """Discord did not answer (network, or a wrong MARIONETTE_DISCORD_API_URL)."""


def no_channels() -> DiscordStartError:
    return DiscordStartError(
        f"{CHANNELS_VARIABLE} is empty: the bot reads only the channels you list. Set it to "
        f"their ids as JSON, e.g. {CHANNELS_VARIABLE}='[123456789012345678]' (in Discord: "
        "Settings, Advanced, Developer Mode on; then right-click a channel, Copy Channel ID)"
    )
