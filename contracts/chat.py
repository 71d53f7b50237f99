"""chat.message: twitch / discord / control panel -> policy."""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from contracts.envelope import Envelope
from contracts.limits import MAX_AUTHOR_CHARS, MAX_BADGES, MAX_CHAT_CHARS, MAX_TAG_CHARS

Platform = Literal["twitch", "discord", "control_panel", "cli", "gateway"]
"""Where the line came from; "gateway": a program talking through the HTTP API (an NPC's
player, via /api/dialogue)."""

PersonaName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""A persona file's name, without .toml (what personas_dir holds)."""


class ChatMessage(Envelope):
    """A viewer's chat line; moderated before it reaches the LLM."""

    platform: Platform
    author: Annotated[str, StringConstraints(min_length=1, max_length=MAX_AUTHOR_CHARS)]
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHAT_CHARS)]
    badges: list[Annotated[str, StringConstraints(max_length=MAX_TAG_CHARS)]] = Field(
        default_factory=list, max_length=MAX_BADGES
    )
    persona: PersonaName | None = Field(
        default=None,
        description="Answer as this persona file (an NPC), with the session's own memory; "
        "None: as the live persona.",
    )
