"""What a Discord message becomes: a ChatIncoming on chat.incoming, or a command.

Pure functions over `Line`, the facts the bot reads off a discord.py Message
(services.discord.client.line_of), so the mapping is tested without Discord.
"""

import re
from dataclasses import dataclass, field

from contracts.chat import ChatIncoming
from contracts.limits import MAX_AUTHOR_CHARS, MAX_CHAT_CHARS, MAX_EMOTES

TURN_PREFIX = "discord-"

_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_EMOJI = re.compile(r"<a?:(\w{1,32}):\d+>")
_SPACES = re.compile(r"[ \t]{2,}")

COMMANDS = frozenset({"join", "leave", "skip", "panic"})
MODERATOR_COMMANDS = frozenset({"skip", "panic"})
"""Commands only members who may manage messages (or the server's owner) can give."""


@dataclass(frozen=True)
class Line:
    """One Discord message, as far as Marionette cares."""

    message_id: int
    channel_id: int
    author_id: int
    author_name: str
    content: str
    badges: list[str] = field(default_factory=list)
    reply_to: int | None = None
    mentions_bot: bool = False
    replies_to_bot: bool = False
    users: dict[int, str] = field(default_factory=dict)  # mentioned users' display names
    roles: dict[int, str] = field(default_factory=dict)  # mentioned roles' names
    channels: dict[int, str] = field(default_factory=dict)  # mentioned channels' names


@dataclass(frozen=True)
class Command:
    name: str
    argument: str


def turn_id_for(message_id: int) -> str:
    """The turn a Discord message opens: from its snowflake, so the same message always
    makes the same ids (a redelivered line is dropped downstream as a duplicate)."""
    return f"{TURN_PREFIX}{message_id}"


def badges_for(*, owner: bool, manages_messages: bool, boosting: bool) -> list[str]:
    """Discord's roles in the arbiter's words: the server's owner is the "broadcaster" (and
    a moderator), anyone who may manage messages in the channel a "moderator", a server
    booster a "subscriber" (Discord's nearest to a paying supporter)."""
    badges = []
    if owner:
        badges.append("broadcaster")
    if owner or manages_messages:
        badges.append("moderator")
    if boosting:
        badges.append("subscriber")
    return badges


def clean_text(line: Line, bot_id: int) -> tuple[str, list[str]]:
    """The text a person reads, and the custom emoji named in it: the bot's own mention
    taken out (it is how one talks to the bot, not what one says), other mentions as names,
    custom emoji as :name:."""
    emotes: list[str] = []

    def user(match: re.Match[str]) -> str:
        user_id = int(match[1])
        return "" if user_id == bot_id else "@" + line.users.get(user_id, "someone")

    def emoji(match: re.Match[str]) -> str:
        if match[1] not in emotes and len(emotes) < MAX_EMOTES:
            emotes.append(match[1])
        return f":{match[1]}:"

    text = _USER.sub(user, line.content)
    text = _ROLE.sub(lambda m: "@" + line.roles.get(int(m[1]), "role"), text)
    text = _CHANNEL.sub(lambda m: "#" + line.channels.get(int(m[1]), "channel"), text)
    text = _EMOJI.sub(emoji, text)
    # "@Bot, hello" leaves ", hello" behind.
    text = _SPACES.sub(" ", text).strip().lstrip(",:;").strip()
    return text[:MAX_CHAT_CHARS], emotes


def chat_line_for(line: Line, session_id: str, bot_id: int) -> ChatIncoming | None:
    """The line on chat.incoming; None when nothing is left to answer (only a mention)."""
    text, emotes = clean_text(line, bot_id)
    if not text:
        return None
    return ChatIncoming(
        session_id=session_id,
        turn_id=turn_id_for(line.message_id),
        seq=0,
        platform="discord",
        author=(line.author_name.strip() or str(line.author_id))[:MAX_AUTHOR_CHARS],
        text=text,
        badges=line.badges,
        author_id=str(line.author_id),
        platform_message_id=str(line.message_id),
        reply_to=str(line.reply_to) if line.reply_to is not None else None,
        channel=str(line.channel_id),
        emotes=emotes,
        mentions_character=line.mentions_bot or line.replies_to_bot,
    )


def parse_command(content: str, prefix: str) -> Command | None:
    """`!join`, `!panic off`...: a known command after the prefix; None for anything else
    (an unknown "!wow" is a chat line like any other)."""
    if not content.startswith(prefix):
        return None
    word, _, rest = content[len(prefix) :].strip().partition(" ")
    name = word.lower()
    return Command(name, rest.strip()) if name in COMMANDS else None
