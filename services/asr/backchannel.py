"""Backchannels: what a listener says to show they follow ("yeah", "uh-huh", "mm"), not
to take the floor. Said alone over the character, it never interrupts it."""

import re

DEFAULT_BACKCHANNELS = (
    "yeah, yes, yep, yup, uh-huh, uh huh, mm, mhm, mm-hmm, hmm, hm, right, okay, ok, oh, "
    "ah, wow, i see, sure, got it, cool, nice"
)
_NOT_WORD = re.compile(r"[^\w\s'-]+")
LAUGH = re.compile(r"a?(?:h[aeiou]){2,}h?|a?hah?|heh")
"""A laugh as Whisper writes it: "ha", "haha", "Aha", "hehe", "hihi" (not "hi")."""


def phrases(setting: str) -> frozenset[str]:
    """The comma-separated setting as normalized phrases."""
    return frozenset(p for p in (normalize(part) for part in setting.split(",")) if p)


def normalize(text: str) -> str:
    """Lower case, punctuation and hyphens as spaces: "Uh-huh." -> "uh huh"."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).replace("-", " ").split())


def is_backchannel(text: str, known: frozenset[str]) -> bool:
    """Only backchannels in it ("Yeah.", "Mm-hmm, yeah."), and at least one word.

    Split at punctuation first, so that "Oh, I see." is two known phrases; within a
    piece, a phrase may repeat ("yeah yeah"). A laugh counts whatever the setting says:
    it never takes the floor."""
    pieces = [normalize(piece) for piece in re.split(r"[.,!?;:…]+", text)]
    pieces = [p for p in pieces if p]
    if not pieces or not known:
        return False
    return all(
        piece in known or all(w in known or LAUGH.fullmatch(w) for w in piece.split())
        for piece in pieces
    )
