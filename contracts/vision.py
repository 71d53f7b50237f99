"""vision.observation: what a camera stage or the panel saw, for the policy's
"describe what you see" tool.

An observation is text and labels, not pixels: the detector runs where the picture is
taken (a camera stage, the gateway for an image from the browser), and only what it found
travels on the bus.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.envelope import Envelope
from contracts.limits import MAX_REASON_CHARS

MAX_SEEN_OBJECTS = 32
MAX_VISION_DESCRIPTION_CHARS = 500

Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class SeenObject(BaseModel):
    """Something the detector found: a label, how many, how sure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: Label = Field(description="What it is: 'face', 'person', 'cat'...")
    count: int = Field(default=1, ge=1, le=1000)
    confidence: float = Field(default=1.0, ge=0, le=1)


class VisionObservation(Envelope):
    """One look: what was seen, in words and as labels."""

    source: Label = Field(
        description="Who looked: 'camera', 'panel' (an image sent from the browser), 'file'."
    )
    description: Annotated[str, StringConstraints(max_length=MAX_VISION_DESCRIPTION_CHARS)] = Field(
        description="What was seen, in a sentence the character can use."
    )
    objects: list[SeenObject] = Field(default_factory=list, max_length=MAX_SEEN_OBJECTS)
    width: int = Field(ge=1, le=16_384, description="The picture's size, in pixels.")
    height: int = Field(ge=1, le=16_384)
    detector: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)] = Field(
        default="", description="What looked (model and version), for the record."
    )
