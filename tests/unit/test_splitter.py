"""Speakable units from a streamed reply: exact cuts, and the same cuts for any chunking."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tts.splitter import SentenceSplitter, split_text

CASES: list[tuple[str, list[str]]] = [
    # sentence ends, runs of them, and closing quotes or brackets
    ("Hello there. How are you? I am fine!", ["Hello there.", "How are you?", "I am fine!"]),
    ("Really?! That is wild.", ["Really?!", "That is wild."]),
    ('She said "Hello." Then she left.', ['She said "Hello."', "Then she left."]),
    ("It was great (really!) Anyway.", ["It was great (really!)", "Anyway."]),
    ("Was the answer 'yes?' Maybe not.", ["Was the answer 'yes?'", "Maybe not."]),
    ("Il a dit «Bonjour.» Puis rien.", ["Il a dit «Bonjour.»", "Puis rien."]),
    ('"Really?" she asked. Yes.', ['"Really?" she asked.', "Yes."]),
    ("No. I disagree.", ["No.", "I disagree."]),
    ("The end", ["The end"]),
    # CJK needs no space after the end
    ("你好。今天天气很好！你呢？", ["你好。", "今天天气很好！", "你呢？"]),  # noqa: RUF001
    # newlines end a unit
    ("First line\n\nSecond line", ["First line", "Second line"]),
    ("Steps:\n- one\n- two", ["Steps:", "- one", "- two"]),
    # abbreviations, multi-dot ones included
    (
        "I met Dr. Smith at 3 p.m. yesterday. He said hi.",
        ["I met Dr. Smith", "at 3 p.m. yesterday.", "He said hi."],
    ),
    (
        "Mr. and Mrs. Jones met Prof. Lee. Ms. Kay too.",
        ["Mr. and Mrs. Jones met Prof. Lee.", "Ms. Kay too."],
    ),
    (
        "He moved to the U.S. last year. Then the U.K. too.",
        ["He moved to the U.S. last year.", "Then the U.K. too."],
    ),
    (
        "Bring fruit, e.g. apples. Or i.e. pears.",
        ["Bring fruit,", "e.g. apples.", "Or i.e. pears."],
    ),
    (
        "Acme Inc. and Foo Ltd. merged with Bar Co. today. Big news.",
        ["Acme Inc. and Foo Ltd. merged", "with Bar Co. today.", "Big news."],
    ),
    ("Cats vs. dogs etc. is a classic. Yes.", ["Cats vs. dogs etc. is a classic.", "Yes."]),
    ("It takes approx. 5 minutes. Wait.", ["It takes approx. 5 minutes.", "Wait."]),
    ("Item No. 5 is in Fig. 3 here. Done.", ["Item No. 5 is", "in Fig. 3 here.", "Done."]),
    ("He lives on Main St. near Mt. Hood. Nice.", ["He lives on Main St. near Mt. Hood.", "Nice."]),
    (
        "Martin Luther King Jr. and Sr. spoke. Wow.",
        ["Martin Luther King Jr. and Sr. spoke.", "Wow."],
    ),
    ("Wake me at 7 a.m. tomorrow. Thanks.", ["Wake me at 7 a.m. tomorrow.", "Thanks."]),
    # decimals, versions, times
    ("Pi is about 3.14 today. Yes.", ["Pi is about 3.14 today.", "Yes."]),
    ("Version v2.0.1 is out... finally!", ["Version v2.0.1 is out... finally!"]),
    ("Update to 1.2.3 now. Done.", ["Update to 1.2.3 now.", "Done."]),
    ("We meet at 10:30 sharp. Bye.", ["We meet at 10:30 sharp.", "Bye."]),
    ("It ended in 1999. Then what?", ["It ended in 1999.", "Then what?"]),
    # ellipsis: inside a sentence before lowercase, an end otherwise
    ("Wait... what? No way!", ["Wait... what?", "No way!"]),
    ("Hmm… okay then. Sure.", ["Hmm… okay then.", "Sure."]),
    ("Hmm… Okay then.", ["Hmm…", "Okay then."]),
    # e-mail addresses, URLs, file names
    ("Email me at a.b@example.com. Thanks!", ["Email me at a.b@example.com.", "Thanks!"]),
    ("Visit https://example.com. It's great!", ["Visit https://example.com.", "It's great!"]),
    ("See https://example.com/a.b?x=1 now. Ok.", ["See https://example.com/a.b?x=1 now.", "Ok."]),
    ("Go to www.example.com today. Ok.", ["Go to www.example.com today.", "Ok."]),
    ("Open config.toml and edit it. Done.", ["Open config.toml and edit it.", "Done."]),
    # initials
    ("J. R. R. Tolkien wrote it. Then he slept.", ["J. R. R. Tolkien wrote it.", "Then he slept."]),
    # the early first fragment, and only the first
    (
        "Oh wow, that is a really great question, let me think.",
        ["Oh wow,", "that is a really great question, let me think."],
    ),
    (
        "Yes, I can help with that. Let me check.",
        ["Yes, I can help", "with that.", "Let me check."],
    ),
    (
        "First sentence here. Then, after that, more words, come here.",
        ["First sentence here.", "Then, after that, more words, come here."],
    ),
    ("It costs 3,000 dollars, which is a lot.", ["It costs 3,000 dollars,", "which is a lot."]),
    ("I counted 1, 2, 3, 4, 5 sheep. Done.", ["I counted 1, 2, 3, 4, 5 sheep.", "Done."]),
    ("Well I really think - maybe not.", ["Well I really think -", "maybe not."]),
    (
        "The answer is simple — practice every day.",
        ["The answer is simple —", "practice every day."],
    ),
    ("Here is the thing; it works well.", ["Here is the thing;", "it works well."]),
    (
        "These are my three reasons: speed and cost.",
        ["These are my three reasons:", "speed and cost."],
    ),
    ("A well-known long-term plan, sure.", ["A well-known long-term plan,", "sure."]),
    (
        "The meeting is at 10:30, right after lunch.",
        ["The meeting is at 10:30,", "right after lunch."],
    ),
    # whitespace
    ("  Hello.   World.  ", ["Hello.", "World."]),
    ("   ", []),
    ("", []),
]


PHRASE_BREAKS: list[tuple[str, list[str]]] = [
    # The first unit may end before a word that starts a phrase, after four words...
    ("The sky is blue because it scatters.", ["The sky is blue", "because it scatters."]),
    ("My cat and I went for a walk.", ["My cat and I went", "for a walk."]),
    ("The capital of France is Paris.", ["The capital of France", "is Paris."]),
    # ...not sooner, not before words that bind to the one before, and only the first unit.
    ("I went for a walk.", ["I went for a walk."]),
    ("I really want to go home. It is late and I am tired.",
     ["I really want to go home.", "It is late and I am tired."]),
    ("I love that game so much.", ["I love that game", "so much."]),
    ("He is at home.", ["He is at home."]),
    ("My favourite colour is blue.", ["My favourite colour is blue."]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "units"), PHRASE_BREAKS)
def test_the_first_unit_ends_before_a_phrase_after_enough_words(
    text: str, units: list[str]
) -> None:
    assert split_text(text) == units


@pytest.mark.parametrize(("text", "units"), CASES)
def test_tricky_cases(text: str, units: list[str]) -> None:
    assert split_text(text) == units


@pytest.mark.parametrize(("text", "units"), CASES)
def test_tricky_cases_token_by_token(text: str, units: list[str]) -> None:
    splitter = SentenceSplitter()
    got = [unit for char in text for unit in splitter.feed(char)]
    assert got + splitter.flush() == units


def test_units_come_as_soon_as_decided() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello Dr") == []
    assert splitter.feed(".") == []
    assert splitter.feed(" Smith. It's 3.") == ["Hello Dr. Smith."]
    assert splitter.feed("14 now") == []
    assert splitter.feed("! And") == ["It's 3.14 now!"]
    assert splitter.flush() == ["And"]


def test_undecided_ends_are_held_until_more_text() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Bye. Wait...") == ["Bye."]
    assert splitter.feed(" ") == []  # "wait... what" or "Wait... What"?
    assert splitter.feed("what?") == []  # "what?!" would be one run
    assert splitter.feed(" Ok") == ["Wait... what?"]


def test_flush_readies_the_next_reply() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("One two three four, five. Six seven eight nine, ten.") == [
        "One two three four,",
        "five.",
    ]
    assert splitter.flush() == ["Six seven eight nine, ten."]
    assert splitter.feed("Again one two three, four. ") == ["Again one two three,", "four."]


def test_first_clause_words() -> None:
    text = "Oh wow, that is great, really."
    assert split_text(text) == ["Oh wow,", "that is great, really."]
    assert split_text(text, first_clause_words=4) == ["Oh wow, that is great,", "really."]
    assert split_text(text, first_clause_words=100) == [text]
    # One word is too short a unit: a clipped "Yes," then a gap while the rest is made.
    assert split_text("Yes, I do love it.") == ["Yes, I do love it."]


def test_first_fragment_words() -> None:
    text = "Well I think so because it is."
    assert split_text(text) == ["Well I think so", "because it is."]
    assert split_text(text, first_fragment_words=100) == [text]


def test_long_units_are_cut_at_a_clause_or_a_space() -> None:
    assert split_text("aaa bbb ccc ddd", max_chars=8) == ["aaa bbb", "ccc ddd"]
    text = "one two three four five, six seven eight nine ten eleven twelve."
    assert split_text(text, first_fragment_words=100, max_chars=40) == [
        "one two three four five,",
        "six seven eight nine ten eleven twelve.",
    ]
    # A clause boundary that would leave a stub loses to the last space.
    assert split_text("ab, cd ef gh ij kl", first_fragment_words=100, max_chars=12) == [
        "ab, cd ef gh",
        "ij kl",
    ]


def test_a_word_longer_than_max_chars_is_kept_whole() -> None:
    word = "x" * 30
    assert split_text(f"{word} yy zz", max_chars=8) == [word, "yy zz"]
    assert split_text(word, max_chars=8) == [word]


def test_long_cjk_is_cut_between_characters() -> None:
    assert split_text("一二三四五六七八九十", max_chars=4) == ["一二三四", "五六七八", "九十"]
    assert split_text("一二三，四五六七八", max_chars=5) == ["一二三，", "四五六七八"]  # noqa: RUF001


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        SentenceSplitter(max_chars=0)
    with pytest.raises(ValueError, match="first_fragment_words"):
        SentenceSplitter(first_fragment_words=-1)


# Pieces that stress every rule; joined at random, they make tricky replies.
PIECES = [
    " ", " ", " ", "  ", "\n", "\n\n", "Hello", "world", "it", "is", "what", "wait", "Smith",
    "Dr", "Mr", "No", "Fig", "e.g", "U.S", "p.m", "J", "etc", ".", ".", "...", "…", "!", "?",
    "?!", ",", ";", ":", " - ", " — ", "-", "3", "14", "3.14", "3,000", "v2.0.1", "10:30",
    "a.b@example.com", "https://example.com/a.b?x=1", "www.example.com", "config.toml",
    '"', "'", ")", "(", "»", "x" * 30,
]  # fmt: skip
CJK_PIECES = ["你好", "今天", "。", "！", "？", "，"]  # noqa: RUF001

texts = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
cjk_texts = st.lists(st.sampled_from(PIECES + CJK_PIECES), max_size=40).map("".join)
options = st.fixed_dictionaries(
    {
        "first_fragment_words": st.sampled_from([0, 1, 2, 4]),
        "max_chars": st.sampled_from([1, 12, 30, 250]),
    }
)


def fed_in_chunks(text: str, cuts: list[int], **kwargs: int) -> list[str]:
    splitter = SentenceSplitter(**kwargs)
    bounds = [0, *sorted(set(cuts)), len(text)]
    units: list[str] = []
    for start, end in itertools.pairwise(bounds):
        units += splitter.feed(text[start:end])
    return units + splitter.flush()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), text=cjk_texts, kwargs=options)
def test_any_chunking_gives_the_same_units(
    data: st.DataObject, text: str, kwargs: dict[str, int]
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12))
    assert fed_in_chunks(text, cuts, **kwargs) == split_text(text, **kwargs)


@settings(max_examples=300, deadline=None)
@given(text=cjk_texts, kwargs=options)
def test_character_by_character_gives_the_same_units(text: str, kwargs: dict[str, int]) -> None:
    assert fed_in_chunks(text, list(range(len(text))), **kwargs) == split_text(text, **kwargs)


@settings(max_examples=300, deadline=None)
@given(text=texts, kwargs=options)
def test_units_rejoin_to_the_text(text: str, kwargs: dict[str, int]) -> None:
    units = split_text(text, **kwargs)
    assert all(unit and unit == unit.strip() for unit in units)
    assert " ".join(units) == " ".join(text.split())


@settings(max_examples=300, deadline=None)
@given(text=cjk_texts, kwargs=options)
def test_no_text_lost_and_units_bounded(text: str, kwargs: dict[str, int]) -> None:
    units = split_text(text, **kwargs)
    assert "".join("".join(units).split()) == "".join(text.split())
    # Only a single word may exceed max_chars: never cut inside a word.
    for unit in units:
        assert len(unit) <= kwargs["max_chars"] or len(unit.split()) == 1
