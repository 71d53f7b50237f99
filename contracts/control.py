"""control: control panel, asr (barge-in), twitch commands -> every stage."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.envelope import Envelope, Identifier

Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Interrupt(_Command):
    """Stop everything of one turn: generation, synthesis, playback, mouth."""

    kind: Literal["interrupt"] = "interrupt"
    target_turn_id: Identifier
    reason: Name = "barge_in"


class PersonaChange(_Command):
    kind: Literal["persona"] = "persona"
    persona: Name


class ModuleToggle(_Command):
    kind: Literal["module"] = "module"
    module: Name
    enabled: bool


class Panic(_Command):
    """Silence the character at once and stop taking input until re-enabled."""

    kind: Literal["panic"] = "panic"
    engaged: bool = True


Command = Annotated[Interrupt | PersonaChange | ModuleToggle | Panic, Field(discriminator="kind")]


class Control(Envelope):
    """Small messages that must overtake data."""

    command: Command
