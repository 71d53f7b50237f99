"""Moderation on the way in (speech and chat) and on the way out (before speech).

Rules are plain text files in a folder, one case-insensitive regular expression a line,
`#` for comments:
    blocked_input.txt    input that gets the persona's safe reply instead of the LLM
    injection.txt        attempts to take the character over; also answered safely
    unsafe_output.txt    words replaced in what the character says
    family_friendly.txt  added to blocked_input and unsafe_output in family-friendly mode
"""

import re
from dataclasses import dataclass
from pathlib import Path

from services.errors import StageStartError

BUNDLED_RULES = Path(__file__).parent / "rules"
BLEEP = "beep"


class RulesError(StageStartError, ValueError):
    """A rule file is missing or holds an invalid pattern."""


def _load(path: Path) -> list[re.Pattern[str]]:
    if not path.is_file():
        raise RulesError(f"moderation rule file missing: {path}")
    patterns = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            patterns.append(re.compile(line, re.IGNORECASE))
        except re.error as exc:
            raise RulesError(f"{path}:{number}: bad pattern {line!r}: {exc}") from None
    return patterns


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""


class Moderator:
    def __init__(self, rules_dir: Path) -> None:
        self.blocked = _load(rules_dir / "blocked_input.txt")
        self.injection = _load(rules_dir / "injection.txt")
        self.unsafe = _load(rules_dir / "unsafe_output.txt")
        self.family = _load(rules_dir / "family_friendly.txt")

    def check_input(self, text: str, family_friendly: bool) -> Verdict:
        for pattern in self.injection:
            if pattern.search(text):
                return Verdict(False, f"tries to take over the character ({pattern.pattern})")
        for pattern in self.blocked + (self.family if family_friendly else []):
            if pattern.search(text):
                return Verdict(False, f"blocked input ({pattern.pattern})")
        return Verdict(True)

    def sanitize(self, text: str, family_friendly: bool) -> str:
        for pattern in self.unsafe + (self.family if family_friendly else []):
            text = pattern.sub(BLEEP, text)
        return text


class StreamSanitizer:
    """Sanitizes a token stream word-whole: a word split over tokens is held until complete."""

    def __init__(self, moderator: Moderator, family_friendly: bool) -> None:
        self._moderator = moderator
        self._family = family_friendly
        self.held = ""  # the start of a word that may continue in the next token

    def feed(self, text: str) -> str:
        text = self.held + text
        cut = max(text.rfind(c) for c in " \n.,!?;:")
        if cut == -1:
            self.held = text
            return ""
        self.held = text[cut + 1 :]
        return self._moderator.sanitize(text[: cut + 1], self._family)

    def flush(self) -> str:
        text, self.held = self.held, ""
        return self._moderator.sanitize(text, self._family)
