"""A Twitch chat line (EventSub channel.chat.message, as twitchio reads it) as Marionette's
ChatIncoming on chat.incoming.

Every id is derived from the Twitch message id, so a notification Twitch delivers twice
(it does, at least once) becomes the same ChatIncoming twice, which the runtime drops.
"""

import hashlib
import re
from dataclasses import dataclass, field

import twitchio

from contracts.chat import ChatIncoming
from contracts.limits import (
    MAX_AUTHOR_CHARS,
    MAX_BADGES,
    MAX_CHAT_CHARS,
    MAX_EMOTES,
    MAX_ID_CHARS,
    MAX_TAG_CHARS,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")


@dataclass(frozen=True)
class TwitchLine:
    """What the stage needs of one chat line."""

    message_id: str
    text: str
    chatter_id: str
    chatter_login: str
    chatter_name: str
    broadcaster_id: str
    badges: list[str] = field(default_factory=list)
    reply_parent_id: str | None = None
    reply_parent_user_id: str | None = None
    emotes: list[str] = field(default_factory=list)
    mentioned_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_event(cls, event: twitchio.ChatMessage) -> "TwitchLine":
        fragments = event.fragments
        emotes = [f.text for f in fragments if f.type == "emote" and f.text]
        mentioned = [f.mention.id for f in fragments if f.mention is not None]
        return cls(
            message_id=event.id,
            text=event.text,
            chatter_id=str(event.chatter.id),
            chatter_login=event.chatter.name or "",
            chatter_name=event.chatter.display_name or event.chatter.name or "",
            broadcaster_id=str(event.broadcaster.id),
            badges=[badge.set_id for badge in event.badges],
            reply_parent_id=event.reply.parent_message_id if event.reply else None,
            reply_parent_user_id=str(event.reply.parent_user.id) if event.reply else None,
            emotes=list(dict.fromkeys(emotes)),  # each emote once, in order
            mentioned_ids=[str(m) for m in mentioned],
        )


def derived_id(kind: str, twitch_id: str) -> str:
    """An Identifier (turn or origin) made from a Twitch id: `tw.<kind>.<id>`, or a hash of
    the id where it would not fit or holds characters an identifier may not."""
    tail = twitch_id if not _UNSAFE.search(twitch_id) else ""
    made = f"tw.{kind}.{tail}"
    if not tail or len(made) > MAX_ID_CHARS:
        made = f"tw.{kind}.h{hashlib.sha256(twitch_id.encode()).hexdigest()[:40]}"
    return made


def mentions_bot(line: TwitchLine, bot_id: str, bot_login: str) -> bool:
    """The line @-mentions the bot, or replies to one of its messages."""
    if bot_id and (bot_id in line.mentioned_ids or line.reply_parent_user_id == bot_id):
        return True
    return bool(bot_login) and f"@{bot_login.lower()}" in line.text.lower()


def to_incoming(
    line: TwitchLine, *, session_id: str, bot_id: str, bot_login: str
) -> ChatIncoming | None:
    """The line for chat.incoming; None for a line with no text."""
    text = line.text.strip()[:MAX_CHAT_CHARS]
    if not text:
        return None
    author = (line.chatter_name or line.chatter_login or line.chatter_id)[:MAX_AUTHOR_CHARS]
    return ChatIncoming(
        session_id=session_id,
        turn_id=derived_id("chat", line.message_id),
        seq=0,
        platform="twitch",
        author=author,
        text=text,
        badges=[b for b in line.badges if len(b) <= MAX_TAG_CHARS][:MAX_BADGES],
        author_id=_platform_id(line.chatter_id),
        platform_message_id=_platform_id(line.message_id),
        reply_to=_platform_id(line.reply_parent_id),
        channel=_platform_id(line.broadcaster_id),
        emotes=[e for e in line.emotes if len(e) <= MAX_TAG_CHARS][:MAX_EMOTES],
        mentions_character=mentions_bot(line, bot_id, bot_login),
    )


def _platform_id(value: str | None) -> str | None:
    """A platform id that fits the contract; one that does not is left out rather than cut
    (a cut id names nothing)."""
    return value if value and len(value) <= MAX_ID_CHARS else None
