"""Inline emotion tags, [happy], pulled out of a token stream as it flows.

A tag can be split across tokens ("[ha", "ppy]"), so text after an open bracket is held
back until the bracket closes or clearly is not a tag.
"""

import re
from dataclasses import dataclass, field

_TAG = re.compile(r"\[([A-Za-z_]{1,32})\]")
_MAX_HELD = 34  # "[" + 32 letters + "]"


@dataclass
class Piece:
    text: str
    tags: list[str] = field(default_factory=list)


class ExpressionFilter:
    def __init__(self, allowed: list[str]) -> None:
        self.allowed = set(allowed)
        self.held = ""  # text after an open bracket, not yet known to be a tag
        self.tags: list[str] = []  # every tag found so far

    def feed(self, token: str) -> Piece:
        """Text safe to speak now, and the tags completed in this token."""
        text = self.held + token
        self.held = ""
        start = text.rfind("[")
        if start != -1 and "]" not in text[start:] and len(text) - start <= _MAX_HELD:
            text, self.held = text[:start], text[start:]
        return self._strip(text)

    def flush(self) -> Piece:
        text, self.held = self.held, ""
        return self._strip(text)

    def _strip(self, text: str) -> Piece:
        found: list[str] = []

        def drop(match: re.Match[str]) -> str:
            tag = match.group(1).lower()
            if tag in self.allowed:
                found.append(tag)
            return ""  # unknown tags are not spoken either

        cleaned = _TAG.sub(drop, text)
        self.tags += found
        return Piece(cleaned, found)
