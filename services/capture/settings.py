"""capture settings: MARIONETTE_CAPTURE_* (or [capture] in marionette.toml)."""

from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.envelope import Identifier
from services.settings import MarionetteSettings


class CaptureSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_CAPTURE_")
    toml_table: ClassVar[str | None] = "capture"

    input: str | None = Field(
        default=None,
        description="A WAV/FLAC file to read, '-' for raw 16 kHz s16le on stdin; none: microphone.",
    )
    device: str | None = Field(
        default=None, description="Microphone id or (part of its) name; none: the default."
    )
    realtime: bool = Field(
        default=True, description="Pace a file in real time (false: as fast as possible)."
    )
    session_id: Identifier = Field(default="local", description="Session the audio belongs to.")
    frame_ms: Literal[10, 20, 30] = Field(default=20, description="Frame length in ms.")
    wait_for_asr_s: float = Field(
        default=0.0, ge=0, le=3600,
        description="Wait up to this long for asr to be running (its models loaded and "
        "warmed up) before capturing, so the first words are not queued behind its start; "
        "0: capture at once. `marionette up` sets 180 when it starts asr too.",
    )  # fmt: skip
    stdin_rate: int = Field(default=16_000, ge=8_000, le=192_000, description="Rate of stdin PCM.")
    stdin_channels: int = Field(default=1, ge=1, le=8, description="Channels of stdin PCM.")
