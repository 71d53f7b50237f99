"""camera settings: MARIONETTE_VISION_* (or [vision] in marionette.toml)."""

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from contracts.envelope import Identifier
from services.settings import MarionetteSettings, load_settings


class VisionSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_VISION_")
    toml_table: ClassVar[str | None] = "vision"

    source: Literal["camera", "file"] = Field(
        default="camera",
        description="What the camera stage looks at: 'camera' (a webcam, see device) or "
        "'file' (the pictures at path). Setting it lets `marionette up` start the stage.",
    )
    device: int = Field(default=0, ge=0, le=63, description="The camera's index (0: the first).")
    path: str | None = Field(
        default=None,
        description="With source=file: a JPEG/PNG/WebP file, or a folder of them looked at "
        "in turn (one per look, by name), for a demo or a test.",
    )
    interval_s: float = Field(
        default=5.0, ge=0.05, le=3600, description="Seconds between two looks."
    )
    republish_s: float = Field(
        default=60.0, ge=0, le=86_400,
        description="An unchanged view is published again after this long (0: only changes), "
        "so a newcomer to the stream soon has a fresh observation.",
    )  # fmt: skip
    session_id: Identifier = Field(
        default="local", description="The session observations belong to (the live character's)."
    )

    # A field validator (not a model validator) so the error names the variable to set.
    @field_validator("path")
    @classmethod
    def _file_needs_a_path(cls, path: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("source") == "file" and not path:
            raise ValueError(
                "MARIONETTE_VISION_SOURCE=file needs a path: a picture or a folder of them"
            )
        return path

    @classmethod
    def configured(cls) -> bool:
        """Whether `up` starts the stage: a source or a path is set (a machine without a
        camera must not fail to start because of one it never asked for)."""
        settings = load_settings(cls)
        return bool({"source", "path"} & settings.model_fields_set)
