"""tool.event: the policy's tool calls and their results, one event each.

A turn may call tools (the time, a dice roll, a memory, what the camera sees) before it
answers. Each call and each result is an event, so the panel can show it, a recording
keeps it, and a replay can compare it.
"""

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from contracts.envelope import Envelope, Identifier
from contracts.limits import MAX_REASON_CHARS

MAX_TOOL_RESULT_CHARS = 2_000
MAX_TOOL_ARGUMENTS = 16

ToolName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
]
ToolPhase = Literal["call", "result"]
ToolOutcome = Literal["ok", "error", "timeout", "refused"]
"""ok: the tool answered; error: it failed (or its arguments were wrong); timeout: it did
not answer within its time limit; refused: the turn may not use it (a viewer's line may not
act on the stream)."""


class ToolEvent(Envelope):
    """A tool call (phase "call") or its result (phase "result"); turn_id is the turn."""

    call_id: Identifier = Field(description="The call, shared by its call and result events.")
    tool: ToolName
    phase: ToolPhase
    arguments: dict[str, Any] = Field(
        default_factory=dict, max_length=MAX_TOOL_ARGUMENTS,
        description="The call's arguments, as the LLM gave them (after validation).",
    )  # fmt: skip
    outcome: ToolOutcome | None = Field(default=None, description="Set on a result.")
    result: Annotated[str, StringConstraints(max_length=MAX_TOOL_RESULT_CHARS)] = Field(
        default="", description="What the tool answered (what the LLM reads next)."
    )
    error: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)] = ""
    elapsed_ms: float | None = Field(default=None, ge=0, description="Set on a result.")
