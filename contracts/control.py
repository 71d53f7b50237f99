"""control: control panel, asr (barge-in), twitch commands -> every stage (OBS commands ->
the obs stage)."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.envelope import Envelope, Identifier

Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Interrupt(_Command):
    """Stop everything of one turn: generation, synthesis, playback, mouth."""

    kind: Literal["interrupt"] = "interrupt"
    target_turn_id: Identifier
    reason: Name = "barge_in"


class Pause(_Command):
    """Hold a turn's audio where it is (someone may be starting to talk over it), or go on.

    A pause is not an interrupt: the turn keeps its place, and nothing but playback stops.
    """

    kind: Literal["pause"] = "pause"
    target_turn_id: Identifier
    paused: bool = Field(default=True, description="False: play on from where it stopped.")
    reason: Name = "barge_in"


class PersonaChange(_Command):
    """Switch to another persona file, and/or change some of its fields, in one step."""

    kind: Literal["persona"] = "persona"
    persona: Name | None = Field(default=None, description="Persona file to switch to.")
    edits: dict[Name, str | float | bool | list[Name]] = Field(
        default_factory=dict, max_length=16, description="Persona fields to change."
    )

    @model_validator(mode="after")
    def _says_something(self) -> "PersonaChange":
        if self.persona is None and not self.edits:
            raise ValueError("a persona change names a persona, edits, or both")
        return self


class ModuleToggle(_Command):
    kind: Literal["module"] = "module"
    module: Name
    enabled: bool


class Panic(_Command):
    """Silence the character at once and stop taking input until re-enabled."""

    kind: Literal["panic"] = "panic"
    engaged: bool = True


class MemoryClear(_Command):
    """Forget what the character remembers of the control message's session, keeping a
    backup of it first (MemoryRestore brings it back)."""

    kind: Literal["memory_clear"] = "memory_clear"
    backup_id: Identifier = Field(
        description="The backup's id, chosen by the sender so it can tell its caller."
    )


class MemoryRestore(_Command):
    """Replace the memory of the control message's session with one of its backups."""

    kind: Literal["memory_restore"] = "memory_restore"
    backup_id: Identifier


class MemoryForget(_Command):
    """Delete what the character remembers of one viewer, everywhere: their lines in every
    session's memory and its backups (long-term memory is deleted by whoever sends this).
    A privacy request: nothing of it is kept."""

    kind: Literal["memory_forget"] = "memory_forget"
    author: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="The viewer's name, as their chat lines carry it."
    )


class SceneSwitch(_Command):
    """Show a scene in OBS (the obs stage switches the program scene to it)."""

    kind: Literal["scene"] = "scene"
    scene: Name


class SourceToggle(_Command):
    """Show or hide a source in OBS, or, with `filter`, switch one of its filters on or off."""

    kind: Literal["source"] = "source"
    source: Name
    enabled: bool
    filter: Name | None = Field(default=None, description="A filter of the source to switch.")
    scene: Name | None = Field(
        default=None, description="The scene the source is shown in; default: the one on air."
    )


class InputMute(_Command):
    """Mute or unmute an audio input in OBS; default: the character's own audio source."""

    kind: Literal["input_mute"] = "input_mute"
    muted: bool
    input: Name | None = Field(default=None, description="Default: the character's audio.")


Command = Annotated[
    Interrupt
    | Pause
    | PersonaChange
    | ModuleToggle
    | Panic
    | MemoryClear
    | MemoryRestore
    | MemoryForget
    | SceneSwitch
    | SourceToggle
    | InputMute,
    Field(discriminator="kind"),
]


class Control(Envelope):
    """Small messages that must overtake data."""

    command: Command
