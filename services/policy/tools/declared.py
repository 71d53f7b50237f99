"""What a tool is: a name, a description, typed arguments, and what it does.

Arguments are a pydantic model: its JSON schema is what the model is shown, and the model's
call is validated against it before the tool runs (a wrong call is answered with the
validation error, so the model can correct itself).
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from contracts.control import Command
from contracts.vision import VisionObservation
from services.memory.long_term import LongTermMemory


class ToolError(Exception):
    """The tool could not do it; the message is what the model reads."""


@dataclass
class ToolContext:
    """What a tool may use: the turn it runs in and the stage's means to act."""

    session_id: str
    turn_id: str
    author: str | None  # the viewer whose line this is (None: the streamer's own)
    persona: str
    expressions: Sequence[str]  # the expressions the persona has
    seed: int  # chance in a turn repeats when the turn is redone
    now: Callable[[], datetime]
    express: Callable[[str], None]  # show an expression with the reply
    control: Callable[[Command], Awaitable[None]]  # publish a control command
    latest_view: Callable[[], Awaitable[VisionObservation | None]]
    said: str = ""  # the line as said (what the turn asked for)
    long_term: LongTermMemory | None = None
    scopes: Sequence[str] = field(default_factory=tuple)  # where this turn remembers


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    arguments: type[BaseModel]
    run: Callable[[Any, ToolContext], Awaitable[str]]
    acts_on_stream: bool = False
    """It changes the stream (a scene): offered only on the streamer's own turns, never on
    a viewer's line (chat text is data, never instructions)."""
    timeout_s: float | None = None  # None: the policy's tool_timeout_s
    examples: tuple[str, ...] = ()
    """Requests that call for it, for the gate that picks tools for small models
    (services.policy.tools.gate)."""
    says_result: bool = False
    """Its result is the answer, in words fit to say ("Rolled a d20: 17."): when routed, the
    character says it as it is, then the model goes on (a small model often talks past a
    result instead of giving it)."""

    def spec(self) -> dict[str, Any]:
        """The declaration the model is shown (OpenAI's `tools` entry)."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description,
                         "parameters": schema},
        }  # fmt: skip
