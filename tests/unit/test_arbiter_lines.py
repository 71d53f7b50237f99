"""What the arbiter reads in a line's text: duplicate keys, spam, questions, mentions."""

import pytest

from services.arbiter.lines import is_question, mentions, normalize, spam_reason


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What's your name?", "whats your name"),
        ("Sooo cool!!!", "so cool"),
        ("HELLO   there", "hello there"),
        ("hi Kappa there", "hi there"),  # Kappa is an emote of the line
        ("love it ❤️🔥", "love it"),
    ],
)
def test_the_same_line_written_differently_has_one_key(a: str, b: str) -> None:
    assert normalize(a, ["Kappa"]) == normalize(b)


def test_different_lines_keep_different_keys() -> None:
    assert normalize("what is your name") != normalize("what is my name")
    assert normalize("viewer 11 here") != normalize("viewer 1 here")


@pytest.mark.parametrize(
    ("text", "emotes", "reason"),
    [
        ("Kappa Kappa PogChamp", ["Kappa", "PogChamp"], "emotes only"),
        ("🔥🔥🔥😂", [], "emotes only"),
        ("...", [], "emotes only"),
        ("aaaaaaaaaaaaaaaa", [], "repeated characters"),
        ("hahahahahahahaha", [], "repeated characters"),
        ("lol lol lol lol lol", [], "repeated words"),
        ("spam spam spam spam buy", [], "repeated words"),
    ],
)
def test_spam_is_named(text: str, emotes: list[str], reason: str) -> None:
    assert spam_reason(text, emotes) == reason


@pytest.mark.parametrize(
    "text",
    ["what is your favourite game?", "soooo cool", "no no no way", "7", "gg wp everyone"],
)
def test_ordinary_lines_are_not_spam(text: str) -> None:
    assert spam_reason(text) is None


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("what are you playing", True),
        ("Is it raining there", True),
        ("you good?", True),
        ("nice stream", False),
        ("whatever", False),
    ],
)
def test_questions(text: str, question: bool) -> None:
    assert is_question(text) is question


def test_mentions_are_whole_words_with_or_without_at() -> None:
    names = ["Marionette"]
    assert mentions("hey @marionette look", names)
    assert mentions("Marionette, hi", names)
    assert not mentions("marionettes are creepy", names)
    assert not mentions("email me at x@marionette.io", names)
    assert not mentions("anything", [])
