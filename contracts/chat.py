"""chat.incoming and chat.message: what the audience and the operator write.

chat.incoming: audience chat as it arrives (Twitch, Discord); the arbiter chooses from it.
chat.message:  lines the character answers, one turn each: those the arbiter chose, and
               the operator's own (panel, CLI, the dialogue API), which skip the queue.
"""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from contracts.envelope import Envelope
from contracts.limits import (
    MAX_AUTHOR_CHARS,
    MAX_BADGES,
    MAX_CHAT_CHARS,
    MAX_EMOTES,
    MAX_ID_CHARS,
    MAX_TAG_CHARS,
)

Platform = Literal["twitch", "discord", "control_panel", "cli", "gateway"]
"""Where the line came from; "gateway": a program talking through the HTTP API (an NPC's
player, via /api/dialogue)."""

PersonaName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""A persona file's name, without .toml (what personas_dir holds)."""

PlatformId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
"""An id the platform gave (a Twitch message UUID, a Discord snowflake): opaque text."""

Badge = Annotated[str, StringConstraints(max_length=MAX_TAG_CHARS)]
"""A platform role: "broadcaster", "moderator", "vip", "subscriber", "founder"..."""


class ChatLine(Envelope):
    """What every chat line carries. The platform fields (ids, reply_to, channel, emotes)
    let a platform stage answer in the right place; none of them reaches the prompt:
    only the author and the text do, moderated."""

    platform: Platform
    author: Annotated[str, StringConstraints(min_length=1, max_length=MAX_AUTHOR_CHARS)]
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHAT_CHARS)]
    badges: list[Badge] = Field(default_factory=list, max_length=MAX_BADGES)
    persona: PersonaName | None = Field(
        default=None,
        description="Answer as this persona file (an NPC), with the session's own memory; "
        "None: as the live persona.",
    )
    author_id: PlatformId | None = Field(
        default=None, description="The author's id on the platform (rate limits, moderation)."
    )
    platform_message_id: PlatformId | None = Field(
        default=None, description="The line's id on the platform (to reply to it)."
    )
    reply_to: PlatformId | None = Field(
        default=None, description="The platform id of the line this one replies to."
    )
    channel: PlatformId | None = Field(
        default=None,
        description="Where it was written (a Twitch broadcaster id, a Discord channel id): "
        "where the answer goes back.",
    )
    emotes: list[Annotated[str, StringConstraints(max_length=MAX_TAG_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_EMOTES,
        description="Names of the platform emotes in the text.",
    )
    mentions_character: bool = Field(
        default=False, description="The platform says the line mentions or replies to the bot."
    )


class ChatIncoming(ChatLine):
    """An audience line as it arrived (chat.incoming): the arbiter decides if and when it
    is answered."""


class ChatMessage(ChatLine):
    """A line the character answers (chat.message), one turn; moderated before it reaches
    the LLM."""

    read_aloud: bool = Field(
        default=False,
        description="Set by the arbiter: say who wrote what before answering it.",
    )
