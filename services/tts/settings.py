"""tts settings: MARIONETTE_TTS_* (or [tts] in marionette.toml)."""

from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.bus.settings import MarionetteSettings


class TtsSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_TTS_")
    toml_table: ClassVar[str | None] = "tts"

    backend: Literal["piper"] = Field(default="piper", description="Speech synthesizer.")
    voice: str = Field(
        default="joe-us",
        description="Piper voice: joe-us (bundled) or a voice .onnx path (its .json beside it).",
    )
    speed: float = Field(default=1.0, gt=0.25, le=4.0, description="Speaking rate; 1 is normal.")
    variation: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="Piper's noise scale: unset keeps the voice's own; 0 makes speech repeatable.",
    )
    first_fragment_words: int = Field(
        default=4, ge=1, le=50, description="Words before the first clause may be spoken early."
    )
    max_unit_chars: int = Field(
        default=250, ge=40, le=2000, description="Longest unit synthesized at once."
    )
