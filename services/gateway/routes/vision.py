"""Show the character a picture: the gateway looks at it and publishes what it saw.

The picture is the request body (a JPEG, PNG or WebP file, as the panel's file picker or a
browser camera snapshot sends it). Only the observation, words and labels, goes on the
bus; the picture is dropped once looked at.
"""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from contracts.envelope import Identifier
from contracts.vision import VisionObservation
from services.gateway.link import new_id
from services.gateway.routes.control import link_of
from services.gateway.routes.memory import FieldError
from services.gateway.security import Access, requires
from services.vision.detector import Detector, Sighting
from services.vision.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageError, ImageTooLarge

router = APIRouter(prefix="/api", tags=["vision"])
Operator = Annotated[str, Depends(requires(Access.OPERATE))]

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
_BINARY = {"schema": {"type": "string", "format": "binary"}}


class VisionAnswer(BaseModel):
    """What was published: the observation, and how long the look took."""

    topic: str
    entry_id: str | None
    message: VisionObservation
    look_ms: float = Field(description="Time spent decoding and looking, in milliseconds.")


class _Eyes:
    """The gateway's detector, built on first use; one look at a time, in a worker thread
    (OpenCV's cascades are not safe to share between threads, and a flood of pictures
    must not take every core)."""

    def __init__(self) -> None:
        self.detector: Detector | None = None
        self.lock = asyncio.Lock()

    async def look(self, picture: bytes) -> Sighting:
        async with self.lock:
            if self.detector is None:
                self.detector = await asyncio.to_thread(Detector)
            return await asyncio.to_thread(self.detector.look, picture)


def eyes_of(request: Request) -> _Eyes:
    state = request.app.state
    if getattr(state, "vision_eyes", None) is None:
        state.vision_eyes = _Eyes()
    eyes: _Eyes = state.vision_eyes
    return eyes


@router.post(
    "/vision",
    response_model=VisionAnswer,
    openapi_extra={
        "requestBody": {"required": True, "content": {kind: _BINARY for kind in IMAGE_TYPES}}
    },
    responses={
        413: {
            "description": f"Over {MAX_IMAGE_BYTES // 2**20} MB, or over "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels."
        },
        415: {"description": "Not sent as image/jpeg, image/png or image/webp."},
        422: {"description": "Not a picture that can be decoded."},
    },
)
async def show_picture(
    request: Request,
    who: Operator,
    session: Annotated[
        Identifier, Query(description="The session it is shown to; default: the live one.")
    ] = "local",
) -> VisionAnswer:
    """Look at a picture (the request body) and publish what was seen as
    vision.observation, source 'panel'."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind not in IMAGE_TYPES:
        raise FieldError(
            415, "header.content-type",
            f"send the picture as {', '.join(IMAGE_TYPES)}; got {kind or 'no type'!r}",
        )  # fmt: skip
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
        raise FieldError(413, "body", _too_large(int(declared)))
    picture = await request.body()
    if len(picture) > MAX_IMAGE_BYTES:
        raise FieldError(413, "body", _too_large(len(picture)))
    if not picture:
        raise FieldError(422, "body", "no picture: the request body is empty")
    try:
        sighting = await eyes_of(request).look(picture)
    except ImageTooLarge as exc:
        raise FieldError(413, "body", str(exc)) from None
    except ImageError as exc:
        raise FieldError(422, "body", str(exc)) from None
    observation = sighting.observation(
        session_id=session, origin=new_id("vision"), seq=0, source="panel"
    )
    published = await link_of(request).publish(observation)
    return VisionAnswer(
        topic=published["topic"], entry_id=published["entry_id"], message=observation,
        look_ms=round(sighting.elapsed_ms, 1),
    )  # fmt: skip


def _too_large(size: int) -> str:
    return (
        f"picture file too large: {size} bytes is over the limit of {MAX_IMAGE_BYTES // 2**20} MB"
    )
