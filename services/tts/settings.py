"""tts settings: MARIONETTE_TTS_* (or [tts] in marionette.toml)."""

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from services.settings import MarionetteSettings

# Kokoro's graph was trained on this range; kokoro-onnx refuses anything outside it.
KOKORO_SPEEDS = (0.5, 2.0)


class TtsSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_TTS_")
    toml_table: ClassVar[str | None] = "tts"

    backend: Literal["piper", "kokoro"] = Field(
        default="piper", description="Speech synthesizer: piper or kokoro."
    )
    voice: str = Field(
        default="joe-us",
        description="Piper voice: joe-us (bundled) or a voice .onnx path (its .json beside it).",
    )
    kokoro_voice: str = Field(
        default="af_heart",
        min_length=1,
        description="Kokoro voice from kokoro-js 1.2.1, e.g. af_heart, am_michael, bf_emma.",
    )
    kokoro_lang: Literal["en-us", "en-gb", "es", "fr-fr", "hi", "it", "pt-br", "ja", "cmn"] = Field(
        default="en-us",
        description="Kokoro's espeak-ng language for the text; en-gb suits the b* voices.",
    )
    kokoro_threads: int = Field(
        default=2, ge=1, le=64, description="onnxruntime threads for Kokoro."
    )
    piper_threads: int = Field(
        default=1, ge=1, le=64,
        description="onnxruntime threads for Piper. A short unit takes 84 ms with two "
        "threads and 147 ms with one on two quiet cores, but the LLM writes the next "
        "sentence meanwhile: in the live bench two threads gave no sooner first audio.",
    )  # fmt: skip
    speed: float = Field(default=1.0, gt=0.25, le=4.0, description="Speaking rate; 1 is normal.")
    variation: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="Piper's noise scale: unset keeps the voice's own; 0 makes speech repeatable.",
    )
    first_fragment_words: int = Field(
        default=4, ge=1, le=50,
        description="Words before the first unit may end before a phrase ('The sky is blue | "
        "because').",
    )  # fmt: skip
    first_clause_words: int = Field(
        default=2, ge=1, le=50,
        description="Words before the first unit may end at a comma, colon or dash ('Oh wow, "
        "| that is great'): the voice pauses there anyway.",
    )  # fmt: skip
    max_unit_chars: int = Field(
        default=250, ge=40, le=2000, description="Longest unit synthesized at once."
    )

    @field_validator("speed")
    @classmethod
    def _speed_for_backend(cls, speed: float, info: ValidationInfo) -> float:
        low, high = KOKORO_SPEEDS
        if info.data.get("backend") == "kokoro" and not low <= speed <= high:
            raise ValueError(f"Kokoro speaks at {low} to {high} times the normal rate")
        return speed
