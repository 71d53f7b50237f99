"""avatar settings: MARIONETTE_AVATAR_* (or [avatar] in marionette.toml)."""

from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.settings import MarionetteSettings


class AvatarSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_AVATAR_")
    toml_table: ClassVar[str | None] = "avatar"

    fps: Literal[30, 60] = Field(default=30, description="Video frames per second of the mouth.")
    silence_db: float = Field(
        default=-45.0, le=0, description="Frames quieter than this (dBFS) keep the mouth shut."
    )
    smoothing: float = Field(
        default=0.5, ge=0, lt=1, description="How much each frame keeps of the previous one."
    )
    blink_every_s: float = Field(default=4.0, gt=0.5, description="Average time between blinks.")
