"""Text rewritten for speech: exact outputs for tricky inputs, and a few properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tts.normalize import normalize_for_speech

CASES: list[tuple[str, str]] = [
    # integers, decimals, ordinals, percentages
    ("I have 42 apples.", "I have forty-two apples."),
    ("It costs 3,000 dollars.", "It costs three thousand dollars."),
    (
        "We had 1,234,567 visitors.",
        "We had one million two hundred and thirty-four thousand"
        " five hundred and sixty-seven visitors.",
    ),
    ("Pi is 3.14.", "Pi is three point one four."),
    ("Call 007.", "Call zero zero seven."),
    ("She came 1st, he came 22nd.", "She came first, he came twenty-second."),
    ("We grew 50% this year.", "We grew fifty percent this year."),
    ("It's 2.5 % more.", "It's two point five percent more."),
    ("It was -5 degrees, about 20°C.", "It was minus five degrees, about twenty degrees Celsius."),
    ("Pages 10-20.", "Pages ten to twenty."),
    ("Roughly ~5 minutes.", "Roughly about five minutes."),
    # currency
    ("It's $5.", "It's five dollars."),
    ("Only $1.50 today.", "Only one dollar and fifty cents today."),
    ("Just $0.99!", "Just ninety-nine cents!"),
    ("I paid $5, then $1,000.", "I paid five dollars, then one thousand dollars."),
    ("That's €3 or £2.", "That's three euros or two pounds."),
    ("It is 1 € and £1.01.", "It is one euro and one pound and one penny."),
    (
        "It raised $5 million, then $1.5M.",
        "It raised five million dollars, then one point five million dollars.",
    ),
    # versions and times
    ("Version v2.0.1 is out.", "Version two point zero point one is out."),
    ("Get v2.0.1 now.", "Get version two point zero point one now."),
    ("Update to 1.2.3 now.", "Update to one point two point three now."),
    ("Meet at 3:30.", "Meet at three thirty."),
    ("Meet at 10:05.", "Meet at ten oh five."),
    ("Lunch at 12:00.", "Lunch at twelve o'clock."),
    ("Meet at 3 p.m. today.", "Meet at three p m today."),
    ("See you at 3 p.m.", "See you at three p m."),
    ("See you at 3pm or 9:00 AM.", "See you at three p m or nine a m."),
    # years and dates in context
    ("It happened in 1999.", "It happened in nineteen ninety-nine."),
    ("Since 2024, fine.", "Since twenty twenty-four, fine."),
    ("Born on May 5, 1990.", "Born on May fifth, nineteen ninety."),
    ("Released 2024-01-15.", "Released January fifteenth, twenty twenty-four."),
    ("Back in the 1990s, it was fun.", "Back in the nineteen nineties, it was fun."),
    # symbols
    ("Tom & Jerry.", "Tom and Jerry."),
    ("1+1=2", "one plus one equals two"),
    ("x = 3 * 4", "x equals three times four"),
    ("You're #1!", "You're number one!"),
    ("Item No. 5.", "Item number five."),
    ("C++ and C# are languages.", "C plus plus and C sharp are languages."),
    ("H2O and mp3 files.", "H two O and mp three files."),
    ("COVID-19 is over.", "COVID-nineteen is over."),
    # e-mails, URLs, file names
    ("Email a.b@example.com.", "Email a dot b at example dot com."),
    ("Write to john_doe@example.com", "Write to john underscore doe at example dot com"),
    ("Go to https://example.com/docs now.", "Go to example dot com slash docs now."),
    ("Visit www.example.com.", "Visit example dot com."),
    (
        "See https://example.com/a.b?x=1.",
        "See example dot com slash a dot b question mark x equals one.",
    ),
    ("Edit config.toml please.", "Edit config dot toml please."),
    # abbreviations
    ("The U.S. economy grew. I live in the U.S.", "The U S economy grew. I live in the U S."),
    ("e.g. apples, i.e. fruit, vs. etc.", "for example apples, that is fruit, versus et cetera."),
    ("Dr. Smith met Mr. Jones.", "Doctor Smith met Mister Jones."),
    # emoji and markdown
    ("Great job 🎉!", "Great job!"),
    ("❤️ Love it 👍🏽.", "Love it."),
    ("Press 1️⃣ now.", "Press one now."),
    (
        "This is *bold*, **very bold**, _italic_ and `code`.",
        "This is bold, very bold, italic and code.",
    ),
    ("# Heading\nSome text.", "Heading Some text."),
    ("- item one\n- item two", "item one item two"),
    ("Read [the docs](https://example.com).", "Read the docs."),
    ("```python\nprint(x)\n```", "print(x)"),
    ("snake_case stays", "snake case stays"),
    # whitespace and punctuation
    ("Hello    world\n\n  again", "Hello world again"),
    (
        'I said "hi", then left; later: nothing... Right?!',
        'I said "hi", then left; later: nothing... Right?!',
    ),
    ("", ""),
]


@pytest.mark.parametrize(("text", "spoken"), CASES)
def test_tricky_cases(text: str, spoken: str) -> None:
    assert normalize_for_speech(text) == spoken


@pytest.mark.parametrize("spoken", [spoken for _, spoken in CASES])
def test_spoken_text_is_left_alone(spoken: str) -> None:
    assert normalize_for_speech(spoken) == spoken


plain_words = st.lists(
    st.sampled_from(
        ["Hello", "world", "it's", "fine", "Yes", "no", "a", "caf\u00e9", "na\u00efve"]
    ),
    min_size=1,
    max_size=12,
)
endings = st.sampled_from([".", "!", "?", "...", ",", ""])


@settings(max_examples=300, deadline=None)
@given(words=plain_words, ending=endings)
def test_plain_sentences_are_unchanged(words: list[str], ending: str) -> None:
    text = " ".join(words) + ending
    assert normalize_for_speech(text) == text


WORDS = [
    "Hello", "world", "3", "42", "3.14", "3,000", "1st", "50%", "$5", "$1.50", "€3", "£2", "v2.0.1",
    "1.2.3", "3:30", "10:05", "3 p.m.", "3pm", "in 1999", "1990s", "May 5", "&", "+", "=", "@",
    "#1", "a.b@example.com", "https://example.com/docs", "www.example.com", "config.toml",
    "U.S.", "e.g.", "etc.", "Dr. Smith", "*bold*", "`code`", "-5", "10-20", "~5", "20°C", "🎉",
    "❤️", "...", "(it)", '"hi"', "x" * 20, "9" * 40, "\n", "# Title\n", "- item\n",
]  # fmt: skip
PUNCTUATION = st.sampled_from(["", "", "", ".", ",", "!", "?", ";"])
# Realistic text: words and tokens apart, each maybe followed by punctuation.
sentences = st.lists(st.tuples(st.sampled_from(WORDS), PUNCTUATION), max_size=20).map(
    lambda pairs: " ".join(word + mark for word, mark in pairs)
)


@settings(max_examples=300, deadline=None)
@given(text=sentences)
def test_normalizing_twice_changes_nothing(text: str) -> None:
    once = normalize_for_speech(text)
    assert normalize_for_speech(once) == once
    assert once == once.strip()
    assert "  " not in once


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_any_unicode_is_handled(text: str) -> None:
    assert isinstance(normalize_for_speech(text), str)
