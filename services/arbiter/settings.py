"""arbiter settings: MARIONETTE_ARBITER_* (or [arbiter] in marionette.toml).

Times are in seconds. docs/arbiter.md says what each one changes and why its default.
"""

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.errors import ConfigError
from services.moderation import BUNDLED_RULES
from services.settings import MarionetteSettings, load_settings


class ArbiterSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_ARBITER_")
    toml_table: ClassVar[str | None] = "arbiter"

    gather_s: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="Wait this long after the floor frees, and after the first line reaches "
        "an idle floor, before choosing: a burst is seen together, and the person at the "
        "microphone may speak first.",
    )
    max_wait_s: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="A line waits at most this long for a free floor (and as long after the "
        "last chat answer); then the best line is released anyway and answered after the "
        "turn in progress, so a talkative streamer never starves chat.",
    )
    stale_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A line that waited longer than this is dropped as stale.",
    )
    turn_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A turn with no news for this long (a stage is down) stops holding the floor.",
    )
    transcript_wait_s: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="After the user stops speaking, the floor stays theirs this long while "
        "asr makes the transcript (an utterance without one, a cough, then lets go).",
    )
    max_queue: int = Field(
        default=50, ge=1, le=1000, description="Lines waiting at most; the lowest is dropped."
    )
    rate_limit_lines: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="One author's lines per rate_limit_window_s; more are dropped as rate "
        "limited (every line counts, dropped or not, so a flood stays limited).",
    )
    rate_limit_window_s: float = Field(
        default=30.0, gt=0, le=3600, description="The window of rate_limit_lines."
    )
    read_aloud: bool = Field(
        default=False,
        description="Have the character say who asked what before answering a chosen line "
        "(read_aloud on its chat.message).",
    )
    names: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Words that count as mentioning the character besides the platform's "
        'own flag (an @mention or a reply), e.g. ["marionette"]; JSON in the environment.',
    )
    rules_dir: Path = Field(
        default=BUNDLED_RULES, description="Moderation rule files lines are checked against."
    )


def load_arbiter_settings() -> ArbiterSettings:
    """The settings, checked against each other (a ConfigError names the variables)."""
    settings = load_settings(ArbiterSettings)
    if settings.max_wait_s >= settings.stale_s:
        raise ConfigError(
            f"MARIONETTE_ARBITER_MAX_WAIT_S ({settings.max_wait_s:g}) must be less than "
            f"MARIONETTE_ARBITER_STALE_S ({settings.stale_s:g}): a line would go stale before "
            "it could be released; lower the first or raise the second"
        )
    if settings.gather_s >= settings.max_wait_s:
        raise ConfigError(
            f"MARIONETTE_ARBITER_GATHER_S ({settings.gather_s:g}) must be less than "
            f"MARIONETTE_ARBITER_MAX_WAIT_S ({settings.max_wait_s:g})"
        )
    return settings
