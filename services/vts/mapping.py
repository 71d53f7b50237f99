"""Which VTube Studio hotkey or expression each of the character's expression tags shows.

A TOML file, one table per tag (the tags are the persona's `expressions`):

    [expressions.happy]
    hotkey = "Smile"            # a hotkey of the model, by name or hotkeyID
    mouth_form = 1.0            # MouthSmile while speaking happily (0 frown .. 1 smile)

    [expressions.sad]
    expression = "sad.exp3.json"   # an expression file, active while the tag is

`marionette vts list --write FILE` writes one with the model's hotkeys and expressions.
"""

import json
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.errors import ConfigError
from services.vts.api import Expression, Hotkey
from services.vts.settings import MAPPING_VARIABLE

DEFAULT_MOUTH_FORM = 0.5


class TagAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hotkey: str | None = Field(default=None, description="A hotkey's name or hotkeyID.")
    expression: str | None = Field(default=None, description="An .exp3.json file.")
    mouth_form: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_action(self) -> "TagAction":
        if self.hotkey is not None and self.expression is not None:
            raise ValueError("give hotkey or expression, not both")
        return self


class VtsMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expressions: dict[str, TagAction] = Field(default_factory=dict)

    def mouth_form(self, tag: str) -> float:
        action = self.expressions.get(tag)
        form = action.mouth_form if action is not None else None
        return DEFAULT_MOUTH_FORM if form is None else form


def load_mapping(path: Path | None) -> VtsMapping:
    if path is None:
        return VtsMapping()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return VtsMapping.model_validate(raw)
    except FileNotFoundError:
        raise ConfigError(
            f"{MAPPING_VARIABLE}={path}: no such file; write one with "
            f"`marionette vts list --write {path}`"
        ) from None
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"{MAPPING_VARIABLE}={path}: not a mapping file: {exc}") from None


def find_hotkey(hotkeys: list[Hotkey], wanted: str) -> Hotkey | None:
    """By hotkeyID first (unique), then by name."""
    for hotkey in hotkeys:
        if hotkey.hotkey_id == wanted:
            return hotkey
    return next((hotkey for hotkey in hotkeys if hotkey.name == wanted), None)


def mapping_template(
    model: str, hotkeys: list[Hotkey], expressions: list[Expression], tags: list[str]
) -> str:
    """A mapping file to fill in: every tag, with the model's hotkeys and expressions listed."""
    lines = [f"# VTube Studio mapping for the model {model!r}, written by `marionette vts list`.",
             "# Give each tag a hotkey (name or id) or an expression file; mouth_form (0..1)",
             "# is the mouth's smile while speaking with that tag.", "#",
             "# Hotkeys of the model:"]  # fmt: skip
    lines += [f"#   {h.name!r:32} {h.type:24} id {h.hotkey_id}" for h in hotkeys] or ["#   (none)"]
    lines += ["#", "# Expressions of the model:"]
    lines += [f"#   {e.file}" for e in expressions] or ["#   (none)"]
    for tag in tags:
        guess = _guess(tag, hotkeys, expressions)
        lines += ["", f"[expressions.{tag}]", guess or f'# hotkey = "..."  # for {tag}']
    return "\n".join(lines) + "\n"


def _guess(tag: str, hotkeys: list[Hotkey], expressions: list[Expression]) -> str:
    """A hotkey or expression whose name contains the tag, if any (the user checks it)."""
    for hotkey in hotkeys:
        if tag in hotkey.name.lower():
            return f"hotkey = {json.dumps(hotkey.name)}"
    for expression in expressions:
        if tag in expression.file.lower():
            return f"expression = {json.dumps(expression.file)}"
    return ""
