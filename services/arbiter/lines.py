"""What the arbiter reads in a chat line's text: its duplicate key, spam, a question, a
mention. Pure functions of the text (and the emote names the platform marked in it)."""

import re
from collections import Counter
from collections.abc import Iterable

QUESTION_WORDS = frozenset({
    "who", "what", "when", "where", "why", "how", "which", "whose", "is", "are", "am", "was",
    "were", "can", "could", "do", "does", "did", "will", "would", "should", "shall", "may",
    "might", "have", "has",
})  # fmt: skip
REPEATED_RUN = re.compile(r"(.)\1{9,}", re.DOTALL)  # one character ten times in a row
NOT_A_WORD = re.compile(r"[\W_]+")  # punctuation, symbols, emoji
REPEATED_LETTERS = re.compile(r"([^\W\d_])\1+")  # letters only: "11" and "1" differ
APOSTROPHES = re.compile(r"['\u2019`]")  # "what's" is "whats", not "what s"


def _words(text: str, emotes: Iterable[str]) -> list[str]:
    """The text's words without the platform's emote names."""
    skip = set(emotes)
    return [word for word in text.split() if word not in skip]


def normalize(text: str, emotes: Iterable[str] = ()) -> str:
    """The line as duplicates are compared: lower case, no emotes, punctuation or emoji,
    repeated letters once ("Sooo cool!!" and "so cool" are the same line)."""
    kept = APOSTROPHES.sub("", " ".join(_words(text, emotes)).lower())
    plain = NOT_A_WORD.sub(" ", kept)
    return " ".join(REPEATED_LETTERS.sub(r"\1", word) for word in plain.split())


def spam_reason(text: str, emotes: Iterable[str] = ()) -> str | None:
    """Why the line is spam whoever wrote it, or None."""
    words = normalize(text, emotes).split()
    if not words:
        marked = len(_words(text, emotes)) < len(text.split())
        return "emotes only" if marked or NOT_A_WORD.search(text) else "no words"
    if REPEATED_RUN.search(text):
        return "repeated characters"
    if len(words) >= 4:
        most = Counter(words).most_common(1)[0][1]
        if most >= 4 and most / len(words) > 0.6:
            return "repeated words"
    compact = "".join(text.lower().split())
    if len(compact) >= 12 and len(set(compact)) <= 2:
        return "repeated characters"
    return None


def is_question(text: str) -> bool:
    words = normalize(text).split()
    return "?" in text or (bool(words) and words[0] in QUESTION_WORDS)


def mentions(text: str, names: Iterable[str]) -> bool:
    """Whether the text names the character (any of its names, as a word, @ or not)."""
    lowered = text.lower()
    return any(
        re.search(rf"(?<![\w@])@?{re.escape(name.lower())}(?!\w)", lowered)
        for name in names
        if name.strip()
    )
