"""A Twitch chat line as Marionette's ChatIncoming: every field, and stable ids.

The events are built as Twitch sends them (the stand-in's chat_event) and read by twitchio's
own model, so the mapping is tested on what the stage really gets.
"""

from typing import Any

import twitchio
from pydantic import TypeAdapter
from twitchio.models.eventsub_ import create_event_instance

from contracts.envelope import Identifier
from services.twitch.chat_in import TwitchLine, derived_id, to_incoming
from tests.standins.twitch import Account, chat_event

CHANNEL = Account("1001", "streamer", "Streamer")
BOT = Account("1002", "marionette_bot", "Marionette_Bot")
VIEWER = Account("1003", "viewer_42", "Viewer_42")
USERS = {a.login: a for a in (CHANNEL, BOT, VIEWER)}
IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
LINE_ID = "2d1b7a6e-6a39-4a0b-9d5f-0a3c7e1f4b21"


def twitchio_line(**event: Any) -> TwitchLine:
    """The event through twitchio's notification parsing, as its websocket does it."""
    notification = {
        "metadata": {"message_id": "n1", "message_type": "notification",
                     "subscription_type": "channel.chat.message", "subscription_version": "1"},
        "payload": {"subscription": {"type": "channel.chat.message", "version": "1"},
                    "event": event},
    }  # fmt: skip
    message = create_event_instance("channel.chat.message", notification, http=None)
    assert isinstance(message, twitchio.ChatMessage)
    return TwitchLine.from_event(message)


def line(text: str, **kwargs: Any) -> TwitchLine:
    kwargs.setdefault("chatter", VIEWER)
    kwargs.setdefault("message_id", LINE_ID)
    return twitchio_line(**chat_event(broadcaster=CHANNEL, text=text, users=USERS, **kwargs))


def incoming(text: str, **kwargs: Any) -> Any:
    message = to_incoming(line(text, **kwargs), session_id="local", bot_id=BOT.user_id,
                              bot_login=BOT.login)  # fmt: skip
    assert message is not None
    return message


def test_every_field_of_a_line() -> None:
    message = incoming("hello Kappa chat PogChamp Kappa", badges=["subscriber", "vip"])
    assert message.platform == "twitch"
    assert message.author == "Viewer_42"  # the display name
    assert message.author_id == VIEWER.user_id
    assert message.text == "hello Kappa chat PogChamp Kappa"
    assert message.badges == ["subscriber", "vip"]
    assert message.platform_message_id == LINE_ID
    assert message.reply_to is None
    assert message.channel == CHANNEL.user_id
    assert message.emotes == ["Kappa", "PogChamp"]  # each emote once
    assert message.mentions_character is False
    assert message.session_id == "local"
    assert message.seq == 0
    assert message.turn_id == f"tw.chat.{LINE_ID}"
    assert message.message_id == f"tw.chat.{LINE_ID}:0"


def test_a_redelivered_line_is_the_same_message() -> None:
    first, again = incoming("same line"), incoming("same line")
    assert first.message_id == again.message_id
    assert first.turn_id == again.turn_id
    assert incoming("other", message_id="another-id").message_id != first.message_id


def test_a_mention_of_the_bot() -> None:
    assert incoming("hey @marionette_bot how are you").mentions_character
    assert not incoming("hey @viewer_42 how are you").mentions_character


def test_a_reply_to_the_bot_mentions_it_and_names_its_parent() -> None:
    parent = chat_event(broadcaster=CHANNEL, chatter=BOT, text="I am here!", message_id="p-1",
                        users=USERS)  # fmt: skip
    message = incoming("are you though", reply_to=parent)
    assert message.reply_to == "p-1"
    assert message.mentions_character


def test_a_reply_to_someone_else_does_not_mention_the_bot() -> None:
    parent = chat_event(broadcaster=CHANNEL, chatter=CHANNEL, text="welcome!", message_id="p-2",
                        users=USERS)  # fmt: skip
    message = incoming("thanks", reply_to=parent)
    assert message.reply_to == "p-2"
    assert not message.mentions_character


def test_a_line_of_spaces_is_nothing() -> None:
    blank = line("   ")
    assert to_incoming(blank, session_id="s", bot_id="1", bot_login="b") is None


def test_derived_ids_are_identifiers_whatever_twitch_sends() -> None:
    for twitch_id in (LINE_ID, "x" * 200, "a b/c:d", "ünïcode"):
        made = derived_id("chat", twitch_id)
        assert IDENTIFIER.validate_python(made) == made
        assert made == derived_id("chat", twitch_id)
    assert derived_id("chat", "a b") != derived_id("chat", "a c")
    assert derived_id("cmd", LINE_ID) != derived_id("say", LINE_ID)
