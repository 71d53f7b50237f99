"""obs settings: MARIONETTE_OBS_* (or [obs] in marionette.toml).

Every scene, source and filter is named here as it is named in OBS; an empty name switches
that rule off, so a streamer sets only what their scene collection has.
"""

from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints
from pydantic_settings import SettingsConfigDict

from services.settings import MarionetteSettings, load_settings

URL_VARIABLE = "MARIONETTE_OBS_URL"
PASSWORD_VARIABLE = "MARIONETTE_OBS_PASSWORD"

ObsName = Annotated[str, StringConstraints(max_length=256)]


class ObsSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_OBS_")
    toml_table: ClassVar[str | None] = "obs"

    url: str = Field(
        default="",
        description="OBS's WebSocket server (OBS: Tools > WebSocket Server Settings), e.g. "
        "ws://127.0.0.1:4455; empty: the obs stage is not configured and `up` leaves it out.",
    )
    password: str = Field(
        default="",
        description="The WebSocket server's password (Show Connect Info in the same dialog); "
        "empty when authentication is off there.",
    )
    session_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:\-]{1,64}$")] = Field(
        default="local", description="The session whose replies OBS shows (the live character's)."
    )
    talking_scene: ObsName = Field(
        default="", description="Shown while a reply plays; empty: scenes stay as they are."
    )
    idle_scene: ObsName = Field(
        default="",
        description="Shown after a reply (and after a panic is lifted); empty: the scene that "
        "was on before.",
    )
    idle_after_s: float = Field(
        default=1.0, ge=0, le=60,
        description="How long after a reply ends the talking scene stays (no flicker between "
        "two replies).",
    )  # fmt: skip
    brb_scene: ObsName = Field(default="", description="Shown on panic (a 'be right back').")
    caption_source: ObsName = Field(
        default="",
        description="A text source (Text GDI+/FreeType 2) that shows the words as they are "
        "spoken; empty: no captions.",
    )
    caption_updates_per_s: float = Field(
        default=8.0, gt=0, le=30, description="At most this many caption changes a second."
    )
    audio_source: ObsName = Field(
        default="",
        description="The input that plays the character's voice: muted on panic, and the "
        "default of an input_mute control.",
    )
    speaking_source: ObsName = Field(
        default="", description="A source shown only while the character speaks (a glow, a tag)."
    )
    speaking_filter_source: ObsName = Field(
        default="", description="The source of speaking_filter."
    )
    speaking_filter: ObsName = Field(
        default="", description="A filter switched on only while the character speaks."
    )
    connect_timeout_s: float = Field(
        default=10, gt=0, le=120, description="How long one connection attempt may take."
    )
    request_timeout_s: float = Field(
        default=5, gt=0, le=60, description="How long one request to OBS may take."
    )
    reconnect_max_s: float = Field(
        default=30, ge=1, le=600,
        description="Reconnection waits double from 1 s up to this while OBS is away.",
    )  # fmt: skip

    @classmethod
    def configured(cls) -> bool:
        """Whether `up` starts the stage: OBS's URL is set."""
        return bool(load_settings(cls).url.strip())
