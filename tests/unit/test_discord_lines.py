"""The discord stage's mapping: a Discord line as a ChatIncoming, commands, how a reply is
shortened and paced."""

import pytest
from pydantic import TypeAdapter

from contracts.envelope import Identifier
from services.discord.lines import (
    Line,
    badges_for,
    chat_line_for,
    clean_text,
    parse_command,
    turn_id_for,
)
from services.discord.replies import ELLIPSIS, ReplyPacer, shorten_reply

BOT = 1_100_000_000_000_000_001
ALICE = 1_100_000_000_000_000_002
SNOWFLAKE = 1_234_567_890_123_456_789


def line(content: str, **fields: object) -> Line:
    base: dict[str, object] = {
        "message_id": SNOWFLAKE, "channel_id": 42, "author_id": ALICE,
        "author_name": "Alice", "content": content,
    }  # fmt: skip
    return Line(**{**base, **fields})  # type: ignore[arg-type]


def test_a_line_carries_every_platform_field() -> None:
    message = chat_line_for(
        line(f"<@{BOT}> what is your name?", badges=["moderator"], reply_to=77,
             mentions_bot=True, users={BOT: "Marionette"}),
        "local", BOT,
    )  # fmt: skip
    assert message is not None
    assert message.platform == "discord"
    assert message.author == "Alice"
    assert message.author_id == str(ALICE)
    assert message.text == "what is your name?"
    assert message.badges == ["moderator"]
    assert message.platform_message_id == str(SNOWFLAKE)
    assert message.reply_to == "77"
    assert message.channel == "42"
    assert message.mentions_character is True
    assert message.session_id == "local"
    assert message.seq == 0
    assert message.turn_id == f"discord-{SNOWFLAKE}"
    assert message.message_id == f"discord-{SNOWFLAKE}:0"


def test_the_same_message_twice_has_the_same_ids() -> None:
    first = chat_line_for(line("hello"), "local", BOT)
    again = chat_line_for(line("hello"), "local", BOT)
    assert first is not None
    assert again is not None
    assert (first.turn_id, first.message_id) == (again.turn_id, again.message_id)


def test_the_turn_id_is_a_valid_identifier_for_the_largest_snowflake() -> None:
    turn = turn_id_for(2**64 - 1)
    assert TypeAdapter(Identifier).validate_python(turn) == turn


def test_a_reply_to_the_bot_mentions_the_character() -> None:
    message = chat_line_for(line("and you?", replies_to_bot=True, reply_to=5), "s", BOT)
    assert message is not None
    assert message.mentions_character is True
    plain = chat_line_for(line("just chatting"), "s", BOT)
    assert plain is not None
    assert plain.mentions_character is False


def test_mentions_read_as_names_and_the_bots_own_is_taken_out() -> None:
    text, emotes = clean_text(
        line(f"<@!{BOT}>,  ask <@{ALICE}> in <#9> about <@&7> <:blob:123> <a:dance:456>",
             users={ALICE: "Alice"}, channels={9: "music"}, roles={7: "DJs"}),
        BOT,
    )  # fmt: skip
    assert text == "ask @Alice in #music about @DJs :blob: :dance:"
    assert emotes == ["blob", "dance"]


def test_a_bare_mention_is_no_line() -> None:
    assert chat_line_for(line(f"<@{BOT}>"), "local", BOT) is None


def test_long_names_and_texts_are_cut_to_the_contract() -> None:
    message = chat_line_for(line("x" * 5000, author_name="n" * 200), "local", BOT)
    assert message is not None
    assert len(message.text) == 2000
    assert len(message.author) == 64


@pytest.mark.parametrize(
    ("owner", "manages", "boosting", "badges"),
    [
        (True, False, False, ["broadcaster", "moderator"]),
        (False, True, False, ["moderator"]),
        (False, False, True, ["subscriber"]),
        (False, False, False, []),
    ],
)
def test_badges(owner: bool, manages: bool, boosting: bool, badges: list[str]) -> None:
    assert badges_for(owner=owner, manages_messages=manages, boosting=boosting) == badges


def test_commands() -> None:
    assert parse_command("!join", "!") is not None
    panic = parse_command("!PANIC off", "!")
    assert panic is not None
    assert (panic.name, panic.argument) == ("panic", "off")
    assert parse_command("!wow that was great", "!") is None  # a chat line, not a command
    assert parse_command("join", "!") is None
    assert parse_command("?leave", "?") is not None


def test_a_short_reply_is_left_as_it_is() -> None:
    assert shorten_reply("  Hello there.  ", 100) == "Hello there."


def test_a_long_reply_is_cut_after_a_whole_sentence() -> None:
    text = "First sentence here. Second one is longer! Third never fits in the room."
    short = shorten_reply(text, 45)
    assert short == "First sentence here. Second one is longer!"


def test_without_a_sentence_end_it_is_cut_between_words() -> None:
    text = "words " * 100
    short = shorten_reply(text, 50)
    assert len(short) <= 50
    assert short.endswith("words" + ELLIPSIS)


def test_a_word_longer_than_half_the_room_is_cut_hard() -> None:
    short = shorten_reply("a " + "x" * 300, 100)
    assert len(short) == 100
    assert short.endswith(ELLIPSIS)


def test_the_pacer_allows_a_burst_then_one_per_interval() -> None:
    now = [0.0]
    pacer = ReplyPacer(burst=2, interval_s=1.0, clock=lambda: now[0])
    assert [pacer.reserve(1) for _ in range(4)] == [0.0, 0.0, 1.0, 2.0]
    assert pacer.reserve(2) == 0.0  # another channel has its own bucket
    now[0] = 10.0
    assert pacer.reserve(1) == 0.0
