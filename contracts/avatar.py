"""avatar.expr: avatar -> OBS / VTube Studio / overlay."""

from typing import Literal

from pydantic import Field, model_validator

from contracts.envelope import Envelope
from contracts.limits import AVATAR_FPS, MAX_MOUTH_FRAMES
from contracts.policy import ExpressionTag


class AvatarExpr(Envelope):
    """Expression and mouth movement for one stretch of speech (or idle)."""

    expression: ExpressionTag = "neutral"
    fps: int = Field(default=30, description="Video frames per second of the mouth track.")
    mouth_open: list[float] = Field(
        default_factory=list, max_length=MAX_MOUTH_FRAMES, description="0..1 per video frame."
    )
    offset_s: float = Field(
        default=0.0, ge=0, description="Where the mouth track starts in the turn's audio (s)."
    )
    state: Literal["speaking", "idle", "blink"] = "speaking"

    @model_validator(mode="after")
    def _check_track(self) -> "AvatarExpr":
        if self.fps not in AVATAR_FPS:
            raise ValueError(f"fps {self.fps}: avatar.expr takes 30 or 60")
        if any(not 0.0 <= v <= 1.0 for v in self.mouth_open):
            raise ValueError("mouth_open values must lie between 0 and 1")
        return self
