"""Answers shortened for Twitch chat, and the chat rate limit."""

import pytest

from services.twitch.chat_out import ELLIPSIS, ChatRateLimit, shorten_for_chat


def test_short_text_is_kept_on_one_line() -> None:
    assert shorten_for_chat("Hello   there,\nchat!", 300) == "Hello there, chat!"


def test_cut_after_the_last_whole_sentence_that_fits() -> None:
    text = "First sentence here. Second one is here too! A third sentence would not fit at all."
    short = shorten_for_chat(text, 50)
    assert short == "First sentence here. Second one is here too!"
    assert len(short) <= 50


def test_cut_after_a_word_with_an_ellipsis_when_no_sentence_fits() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve"
    short = shorten_for_chat(text, 30)
    assert short == "one two three four five six" + ELLIPSIS
    assert len(short) <= 30


def test_a_sentence_too_short_to_be_worth_it_is_not_taken() -> None:
    # "Hi." alone would throw away most of the room: cut at a word instead.
    text = "Hi. " + "word " * 40
    short = shorten_for_chat(text, 60)
    assert short.endswith(ELLIPSIS)
    assert len(short) <= 60
    assert len(short) > 40


def test_one_long_word_is_cut_inside() -> None:
    short = shorten_for_chat("a" * 100, 20)
    assert short == "a" * 19 + ELLIPSIS


@pytest.mark.parametrize("limit", [20, 57, 300, 500])
def test_never_over_the_limit(limit: int) -> None:
    text = "Well, that is a question. " * 40 + "x" * 600
    assert len(shorten_for_chat(text, limit)) <= limit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_counts_a_sliding_window() -> None:
    clock = Clock()
    limit = ChatRateLimit(3, 30.0, clock=clock)
    assert [limit.try_send() for _ in range(4)] == [True, True, True, False]
    assert limit.wait_s() == pytest.approx(30.0)
    clock.now += 29.9
    assert not limit.try_send()
    clock.now += 0.1  # the first three leave the window
    assert limit.wait_s() == 0.0
    assert [limit.try_send() for _ in range(4)] == [True, True, True, False]


def test_rate_limit_never_lets_more_than_the_count_into_any_window() -> None:
    """Unlike a refilling bucket: sends spread over time still never exceed N per window."""
    clock = Clock()
    limit = ChatRateLimit(20, 30.0, clock=clock)
    sent: list[float] = []
    for _ in range(2000):  # try every 0.1 s for 200 s
        if limit.try_send():
            sent.append(clock.now)
        clock.now += 0.1
    for start in sent:
        assert len([t for t in sent if start <= t < start + 30.0]) <= 20
    assert len(sent) >= 20 * (200 // 30)
