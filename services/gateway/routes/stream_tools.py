"""OBS from the panel or a script: scene, source or filter, mute. Each call goes out as one
control message, which the obs stage carries out (a panic is /api/panic: every stage)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import Field, StringConstraints

from contracts.control import InputMute, SceneSwitch, SourceToggle
from services.gateway.routes.control import Published, RequestBody, control, link_of
from services.gateway.security import Access, requires

router = APIRouter(prefix="/api/obs", tags=["obs"])
Operator = Annotated[str, Depends(requires(Access.OPERATE))]
ObsName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class SceneRequest(RequestBody):
    scene: ObsName = Field(description="The scene to put on air, as OBS names it.")


class SourceRequest(RequestBody):
    source: ObsName
    enabled: bool = Field(description="Shown (or, with `filter`, the filter on) or not.")
    filter: ObsName | None = Field(default=None, description="A filter of the source.")
    scene: ObsName | None = Field(default=None, description="Default: the scene on air.")


class MuteRequest(RequestBody):
    muted: bool
    input: ObsName | None = Field(
        default=None, description="Default: the character's audio (MARIONETTE_OBS_AUDIO_SOURCE)."
    )


@router.post("/scene", response_model=Published)
async def switch_scene(body: SceneRequest, request: Request, who: Operator) -> Published:
    """Put a scene on air (talking and BRB come back to it afterwards)."""
    published = await link_of(request).publish(control(SceneSwitch(scene=body.scene)))
    return Published(**published)


@router.post("/source", response_model=Published)
async def toggle_source(body: SourceRequest, request: Request, who: Operator) -> Published:
    """Show or hide a source, or switch one of its filters on or off."""
    command = SourceToggle(source=body.source, enabled=body.enabled, filter=body.filter,
                           scene=body.scene)  # fmt: skip
    return Published(**await link_of(request).publish(control(command)))


@router.post("/mute", response_model=Published)
async def mute(body: MuteRequest, request: Request, who: Operator) -> Published:
    """Mute or unmute an audio input (default: the character's voice)."""
    command = InputMute(muted=body.muted, input=body.input)
    return Published(**await link_of(request).publish(control(command)))
