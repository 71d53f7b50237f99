"""playback settings: MARIONETTE_PLAYBACK_* (or [playback] in marionette.toml)."""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.settings import MarionetteSettings


class PlaybackSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_PLAYBACK_")
    toml_table: ClassVar[str | None] = "playback"

    output: Literal["auto", "speaker", "wav"] = Field(
        default="auto", description="auto: the speakers when there are some, else WAV files."
    )
    device: str | None = Field(default=None, description="Output device id or name.")
    wav_dir: Path = Field(
        default=Path(".marionette/playback"), description="Where WAV files go: SESSION/TURN.wav."
    )
    realtime: bool = Field(
        default=True, description="WAV output takes as long as the audio (progress is real)."
    )
    block_ms: int = Field(
        default=20, ge=5, le=200, description="Audio handed to the output at a time: a pause "
        "or an interrupt takes effect within one block.",
    )  # fmt: skip
    wait_for_user_s: float = Field(
        default=10.0,
        ge=0,
        le=120,
        description="A reply ready while the user is still talking waits for them to stop, "
        "at most this long.",
    )
    max_pause_s: float = Field(
        default=4.0, gt=0, le=60, description="A pause nobody lifts ends by itself after this."
    )
