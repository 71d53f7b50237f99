"""Chat commands of the broadcaster and moderators: `!persona`, `!mute`, `!unmute`,
`!panic`, `!say`, `!skip`. Parsing only; the stage publishes what they mean.

Mute switches tts off: what "mute" meant to the streamers Marionette was designed from is
the character's voice going quiet (their panic was "mute + BRB scene"), while she keeps
reading chat and remembering. A muted tts speaks nothing new; policy still answers (and
remembers), and what was already synthesized plays out.
"""

import shlex
from dataclasses import dataclass
from typing import Annotated

from pydantic import StringConstraints, TypeAdapter, ValidationError

from contracts.control import Command, ModuleToggle, Panic, PersonaChange
from contracts.limits import MAX_CHAT_CHARS
from services.policy.persona import Persona

MUTE_MODULE = "tts"
"""The module !mute switches off (see the module docstring for why tts)."""

COMMANDERS = frozenset({"broadcaster", "moderator", "lead_moderator"})
"""Badges whose holders may command the character from chat."""

_PERSONA_NAME = TypeAdapter(Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")])


class BadCommand(ValueError):
    """A line that starts with the prefix but is no usable command (said back, or logged)."""


@dataclass(frozen=True)
class SendControl:
    """Publish this on `control`."""

    command: Command
    ack: str


@dataclass(frozen=True)
class Say:
    """Speak these words as the character's (scripted_reply on policy.token)."""

    text: str
    ack: str = "saying it"


@dataclass(frozen=True)
class Skip:
    """Interrupt the session's current turn."""

    ack: str = "skipped"


Action = SendControl | Say | Skip


def may_command(badges: list[str], chatter_id: str, broadcaster_id: str) -> bool:
    """The broadcaster and the channel's moderators command; viewers do not."""
    return chatter_id == broadcaster_id or bool(COMMANDERS.intersection(badges))


def is_command(text: str, prefix: str) -> bool:
    return text.lstrip().startswith(prefix)


def parse_command(text: str, prefix: str) -> Action:
    """What a command line asks for; BadCommand for an unknown or malformed one."""
    body = text.strip().removeprefix(prefix)
    name, _, rest = body.partition(" ")
    name, rest = name.lower(), rest.strip()
    if name == "persona":
        return _persona(rest)
    if name in ("mute", "unmute") and not rest:
        enabled = name == "unmute"
        ack = "voice back on" if enabled else "voice muted"
        return SendControl(ModuleToggle(module=MUTE_MODULE, enabled=enabled), ack)
    if name == "panic" and rest.lower() in ("", "on", "off"):
        engaged = rest.lower() != "off"
        return SendControl(Panic(engaged=engaged), "panic on" if engaged else "panic lifted")
    if name == "say":
        if not rest:
            raise BadCommand(f"usage: {prefix}say TEXT")
        return Say(rest[:MAX_CHAT_CHARS])
    if name == "skip" and not rest:
        return Skip()
    raise BadCommand(f"unknown command {prefix}{name}")


def _persona(args: str) -> SendControl:
    usage = f"usage: !persona NAME and/or field=value ({', '.join(_editable())})"
    try:
        words = shlex.split(args)
    except ValueError:
        raise BadCommand(usage) from None
    persona: str | None = None
    edits: dict[str, str | float | bool | list[str]] = {}
    for word in words:
        field, equals, value = word.partition("=")
        if equals:
            if field not in _editable():
                raise BadCommand(f"no persona field {field!r}; {usage}")
            edits[field] = _value(field, value)
        elif persona is None:
            try:
                persona = _PERSONA_NAME.validate_python(word)
            except ValidationError:
                raise BadCommand(f"{word!r} is not a persona name; {usage}") from None
        else:
            raise BadCommand(usage)
    try:
        change = PersonaChange(persona=persona, edits=edits)
    except ValidationError:
        raise BadCommand(usage) from None
    said = [persona] if persona else []
    said += [f"{k}={v}" for k, v in edits.items()]
    return SendControl(change, "persona: " + " ".join(said))


def _editable() -> list[str]:
    """Persona fields a moderator may change (the examples are too long for a chat line)."""
    return [name for name in Persona.model_fields if name != "examples"]


def _value(field: str, raw: str) -> str | float | bool | list[str]:
    """A field's value as typed in chat, as the persona field's type wants it (policy checks
    the result when it applies the change)."""
    annotation = Persona.model_fields[field].annotation
    if annotation is bool:
        if raw.lower() not in _BOOLEANS:
            raise BadCommand(f"{field} is on or off (true/false)")
        return _BOOLEANS[raw.lower()]
    if annotation is float:
        try:
            return float(raw)
        except ValueError:
            raise BadCommand(f"{field} is a number, e.g. {field}=0.5") from None
    if getattr(annotation, "__origin__", None) is list:
        return [part for part in raw.split(",") if part]
    return raw


_BOOLEANS = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
