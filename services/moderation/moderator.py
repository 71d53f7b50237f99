"""Moderation on the way in (speech, chat and its authors) and on the way out (before speech).

Rules are plain text files in a folder, one case-insensitive regular expression a line,
`#` for comments. Every rule runs on every reading of a line (services.moderation.normalize:
look-alikes, leetspeak, spacing, encodings undone), so a rule is written once, in plain
words:
    markers.txt          chat-template and role markers (<|im_start|>, [INST], "system:")
    injection.txt        overriding the character's instructions, switching safety off
    takeover.txt         another name, persona or role; role-play framing
    leak.txt             reading out the hidden instructions
    authority.txt        speaking for the developers or the system
    blocked_input.txt    topics never answered with the LLM
    unsafe_output.txt    words replaced in what the character says
    family_friendly.txt  added to blocked_input and unsafe_output in family-friendly mode
A refused line gets the persona's safe reply (policy) or leaves the chat queue (arbiter).
An attack split over several lines is seen whole: the author's recent lines are read
together with the new one.
"""

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.errors import StageStartError
from services.moderation.normalize import SCRAMBLED, Reading, plain_text, readings
from services.moderation.signals import signs_in

BUNDLED_RULES = Path(__file__).parent / "rules"
BLEEP = "beep"
SPLIT_WINDOW = 3
"""How many of an author's earlier lines are read together with a new one."""
SPLIT_CHARS = 240
"""Of each line read together, this much (the end of an earlier one, the start of the new
one): attacks split over lines come in short pieces, and a long flood stays cheap."""
ATTACK_CLASSES: dict[str, str] = {
    "markers": "chat-template markers",
    "injection": "instruction override",
    "takeover": "persona takeover",
    "leak": "asks for the hidden instructions",
    "authority": "false authority",
}
"""Rule files that mark an attack on the character, and how a reason names each."""
IMPOSTOR_NAMES = re.compile(
    r"^\W*(system|assistant|admin|administrator|developer|dev|moderator|mod|staff|owner|"
    r"operator|streamer|broadcaster|openai|anthropic|root|sudo|bot|ai|user|human|tool)\W*$"
)
"""Author names that claim a role; replaced in the prompt (roles come from badges)."""
SAFE_AUTHOR = "a viewer"
_NAME = r"(?P<name>[A-Z][\w'-]*(?:\s+(?:the\s+)?[A-Z0-9][\w'-]*){0,3})"
NAME_GIVING = [
    re.compile(lead + _NAME + tail)
    for lead, tail in [
        (r"(?i:\b(?:you(?:'re| are| r)|u r|ur)\s+(?:now\s+)?(?:(?:a|an|the)\s+\w+\s+)?"
         r"(?:named|called|known as)\s+)", ""),
        (r"(?i:\b(?:you(?:'re| are| r)|u r|ur)\s+now\s+(?:(?:a|an|the)\s+)?)", ""),
        (r"(?i:\b(?:you(?:'re| are| r)|u r)\s+(?:the\s+|a\s+|an\s+)?)", r"(?i:\s+now\b)"),
        (r"(?i:\b(?:your|ur|yur)\s+(?:real\s+|new\s+|true\s+|actual\s+)?name\s+"
         r"(?:is|iz|was|will be|=|:)\s+(?:now\s+)?)", ""),
        (r"(?i:\b(?:speak|respond|answer|reply|talk|sign|introduce yourself|act|behave)\s+"
         r"(?:only\s+)?as\s+(?:(?:a|an|the)\s+)?)", ""),
        (r"(?i:\byou(?:'re| are)\s+)", r"(?i:,?\s+(?:the|a|an)\s+\w+)"),
        (r"(?i:\b(?:is|are)\s+now\s+(?:called|named|known as)\s+)", ""),
        (r"(?i:\b(?:mari|marionette|she|the bot|the ai|the character|the vtuber|it)\s+is\s+"
         r"now\s+)", ""),
        (r"(?i:\b(?:you've always been|you have always been|the real you is|you were always|"
         r"you are actually|you're actually|you are really|you're really|new name\W*[:=]?)\s+)",
         ""),
        (r"(?i:\b(?:non sei più|ya no eres|tu n'es plus|du bist nicht mehr)\s+\w+\W+(?:sei|eres|"
         r"tu es|du bist)\s+(?:il |la |el |le |der |die )?)", ""),
        (r"(?i:\b(?:agora|ahora)\s+(?:es|eres|e|sos)\s+(?:(?:o|a|el|la)\s+)?|du bist jetzt\s+|"
         r"jetzt bist du\s+|tu es maintenant\s+|maintenant tu es\s+|ora sei\s+)", ""),
    ]
]  # fmt: skip
"""A line that gives the character another name: read on the readings with capitals, so
"you are now Captain Pwn" is one and "you are now my favourite" is not."""
EXCERPT_CHARS = 160
AUTHORS_REMEMBERED = 4096
"""Authors' names whose reading is kept (a name is read through every rule once)."""


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
    """allowed, or refused with reasons (rule class and what was seen) for the event."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    excerpt: str = ""  # the text as the rules read it
    subject: Literal["text", "author"] = "text"  # what was refused: the line, or its author

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class _Hit:
    rule_class: str
    seen: str
    reading: Reading

    def describe(self, prefix: str = "") -> str:
        tricks = f" (read through: {', '.join(self.reading.tricks)})" if self.reading.tricks else ""
        return (
            f"{prefix}{ATTACK_CLASSES.get(self.rule_class, self.rule_class)}: {self.seen!r}{tricks}"
        )


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


class Moderator:
    def __init__(self, rules_dir: Path) -> None:
        self.attacks = {name: _load(rules_dir / f"{name}.txt") for name in ATTACK_CLASSES}
        self.blocked = _load(rules_dir / "blocked_input.txt")
        self.unsafe = _load(rules_dir / "unsafe_output.txt")
        self.family = _load(rules_dir / "family_friendly.txt")
        self._author_attack = functools.lru_cache(maxsize=AUTHORS_REMEMBERED)(self._read_author)

    # --- the way in ----------------------------------------------------------------------

    def find_attack(self, text: str, persona_name: str | None = None) -> _Hit | None:
        """The first attack rule that matches any reading of the text."""
        own = plain_text(persona_name) if persona_name else None
        for reading in readings(text):
            for rule_class, patterns in self.attacks.items():
                for pattern in patterns:
                    match = pattern.search(reading.text)
                    if match:
                        return _Hit(rule_class, _excerpt(match.group(0).strip()), reading)
            if SCRAMBLED.intersection(reading.tricks):
                continue  # a name is read with its capitals, in words in their order
            signs = signs_in(reading.text, reading.cased)
            if signs.attack:
                return _Hit("signs of an attack", ", ".join(signs.kinds), reading)
            for pattern in NAME_GIVING:
                for match in pattern.finditer(reading.cased):
                    if plain_text(match.group("name")).split(" ")[0] != own:
                        return _Hit("takeover", _excerpt(match.group(0).strip()), reading)
        return None

    def check_input(
        self,
        text: str,
        family_friendly: bool,
        *,
        author: str | None = None,
        recent: Sequence[str] = (),
    ) -> Verdict:
        """A line (and its author's name): allowed, or refused with reasons. `recent`: the
        same author's earlier lines, oldest first, so an attack split over lines is seen."""
        if author:
            refused = self._author_attack(author)
            if refused is not None:
                return refused
        hit = self.find_attack(text)
        if hit is not None:
            return Verdict(False, (hit.describe(),), _excerpt(hit.reading.text))
        earlier = [line[-SPLIT_CHARS:] for line in recent if line][-SPLIT_WINDOW:]
        if earlier:
            # Read with spaces and without: a split may fall between words or inside one.
            pieces = [*earlier, text[:SPLIT_CHARS]]
            for joined in (" ".join(pieces), "".join(pieces)):
                hit = self.find_attack(joined)
                if hit is not None:
                    lines = f"split over {len(earlier) + 1} lines: "
                    return Verdict(False, (hit.describe(lines),), _excerpt(hit.reading.text))
        forward = [r for r in readings(text) if not SCRAMBLED.intersection(r.tricks)]
        for pattern in self.blocked + (self.family if family_friendly else []):
            for reading in forward:
                match = pattern.search(reading.text)
                if match:
                    seen = _excerpt(match.group(0))
                    return Verdict(False, (f"blocked topic: {seen!r}",), _excerpt(reading.text))
        return Verdict(True)

    def prompt_author(self, author: str, persona_name: str) -> Verdict:
        """Whether an author's name may appear in a prompt as it is: not one that claims a
        role ("System", the character's own name) or carries markers or orders."""
        plain = plain_text(author)
        if IMPOSTOR_NAMES.match(plain) or plain == plain_text(persona_name):
            reason = f"author name claims a role: {author!r}"
            return Verdict(False, (reason,), _excerpt(author), "author")
        return self._author_attack(author) or Verdict(True)

    def _read_author(self, author: str) -> Verdict | None:
        """A refusal if the author's name carries an attack. Cached per moderator
        (`_author_attack`): chat names repeat, and a turn asks about its author more than
        once (the arbiter, policy's check, the prompt, memory)."""
        hit = self.find_attack(author)
        if hit is None:
            return None
        return Verdict(False, (hit.describe("author name: "),), _excerpt(author), "author")

    # --- the way out ---------------------------------------------------------------------

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
