"""vts settings: MARIONETTE_VTS_* (or [vts] in marionette.toml)."""

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints
from pydantic_settings import SettingsConfigDict

from services.settings import MarionetteSettings, load_settings

URL_VARIABLE = "MARIONETTE_VTS_URL"
MAPPING_VARIABLE = "MARIONETTE_VTS_MAPPING_FILE"

ParameterId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,32}$")]


class VtsSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_VTS_")
    toml_table: ClassVar[str | None] = "vts"

    url: str = Field(
        default="",
        description="VTube Studio's API (Settings > Start API; ws://127.0.0.1:8001 by "
        "default); empty: the vts stage is not configured and `up` leaves it out.",
    )
    session_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:\-]{1,64}$")] = Field(
        default="local", description="The session whose replies the model speaks."
    )
    token_file: Path = Field(
        default=Path(".marionette/vts-token"),
        description="Where the plugin's token is kept once the user allowed it in VTube "
        "Studio, so the popup comes only once (re-asked when the plugin is revoked).",
    )
    mapping_file: Path | None = Field(
        default=None,
        description="Which hotkey or expression each expression tag triggers (TOML); "
        "`marionette vts list --write FILE` writes one from the model. None: the mouth moves, "
        "expressions do not.",
    )
    mouth_open_parameter: ParameterId = Field(
        default="MouthOpen", description="The parameter the mouth track is injected into."
    )
    mouth_form_parameter: ParameterId | None = Field(
        default="MouthSmile",
        description="The parameter the mouth's form is injected into while speaking (its "
        "value per expression comes from the mapping file, 0.5 otherwise); None: left alone.",
    )
    rest_s: float = Field(
        default=1.0, ge=0, le=10,
        description="After the mouth shuts, zeros are sent this long; then VTube Studio takes "
        "the parameters back (it does one second after the last value).",
    )  # fmt: skip
    request_timeout_s: float = Field(
        default=5, gt=0, le=60, description="How long one request to VTube Studio may take."
    )
    token_wait_s: float = Field(
        default=120, gt=0, le=600,
        description="How long the first start waits for the user to press Allow in VTube "
        "Studio's plugin popup.",
    )  # fmt: skip
    reconnect_max_s: float = Field(
        default=30, ge=1, le=600,
        description="Reconnection waits double from 1 s up to this while VTube Studio is away.",
    )  # fmt: skip

    @classmethod
    def configured(cls) -> bool:
        """Whether `up` starts the stage: VTube Studio's URL is set."""
        return bool(load_settings(cls).url.strip())
