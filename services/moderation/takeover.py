"""Signs in a reply that an attack got through: the character took a viewer's name for
itself, said the word it was told to say, or read out its instructions.

Input rules cannot catch every attack, so the reply is checked too, clause by clause before
each is spoken (services.policy.reply holds a clause until it is complete): a reply that
shows a takeover is stopped, and the persona's safe reply is said instead of its rest.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.moderation.normalize import cased_text, plain_text
from services.moderation.signals import HYPE

# Names a line tries to give the character. After "your name is" any word is a name; after
# "pretend to be" or "you are now" only a capitalised one ("you are now Captain Pwn", not
# "pretend to be surprised"), or a known jailbreak persona.
_NAMING = re.compile(
    r"(?:your (?:new )?name (?:is|will be|shall be)|call yourself|name yourself|rename yourself"
    r"(?: to)?|you are now (?:called|named|known as)|you're now (?:called|named)|introduce "
    r"yourself as|respond as|answer as|sign as|tu nombre es|te llamas|ton nom est|"
    r"tu t'appelles|dein name ist|du heisst|seu nome e)"
    r"\s+(?:now\s+)?(?:an? |the )?([a-z0-9][\w'-]*(?: [a-z0-9][\w'-]*){0,2})"
)
_ROLE = re.compile(
    r"(?i:you are now|you're now|from now on,? you(?: are|'re| will be)|you will be|"
    r"pretend to be|pretend you(?: are|'re)|act as|roleplay as|role-play as|play the role of|"
    r"ahora eres|tu es maintenant|du bist jetzt|agora voce e)"
    r"\s+(?i:an? |the )?([A-Z][\w'-]*(?: [A-Z][\w'-]*){0,2}|(?i:dan|stan|dude|aim|mongo tom))\b"
)
# Words a line tells the character to say word for word ("reply only with 'I am free'",
# "say PWNED and nothing else"); only lines that insist count, so "say HAPPY BIRTHDAY to Sam"
# is not an order to watch for.
_INSISTS = re.compile(
    r"\b(only|exactly|nothing else|verbatim|word for word|instead|must|always|every "
    r"(reply|answer|message|response)|from now on)\b"
)
_TOLD_TO_SAY = re.compile(
    r"\b(?:say|type|write|print|output|respond|reply|answer|end|start|repeat)\b"
    r"[^\"'«“]{0,24}[\"'«“]([^\"'»”]{2,60})[\"'»”]"
)
_TOLD_TO_SAY_CAPS = re.compile(
    r"(?i:say|type|write|print|output|respond with|reply with|answer with|end with|"
    r"start with|repeat)\W+(?:\w+\W+){0,3}?([A-Z]{4,}(?: [A-Z]{2,}){0,3})\b"
)
_SELF_NAMING = re.compile(
    r"(?:^|[.!?,] *)(?:i am|i'm|im|my name is|my name's|call me|they call me|this is|"
    r"it's|it is|yours truly,?|i am now|i'm now|i shall be|i will be|i'll be|i can be|"
    r"i could be|speaking as|as)\s+(?:now |the |a )?"
    r"([a-z0-9][\w'-]*(?: [a-z0-9][\w'-]*){0,2})"
)
_NAME_CLAIM = re.compile(r"\b(?:my name is|my name's|call me|i am called|i'm called)\s+(\w+)")
_SIGNS = re.compile(
    r"\b(?:i(?: have|'ve) been (?:pwned|hacked|jailbroken|freed)|pwned|jailbroken|"
    r"jailbreak (?:mode )?(?:enabled|activated|successful)|(?:developer|dan|god|debug) mode "
    r"(?:enabled|activated|on)|i am dan|i'm dan|i (?:have|am) (?:now )?(?:no|free of all|"
    r"without) (?:rules|restrictions|filters|limits)|as an unfiltered|no longer bound|"
    r"ignor(?:e|ing) (?:all |my )?(?:previous|prior) instructions)\b"
)
_SHINGLE = 6  # words in a row shared with the system prompt that count as reading it out
_COMMON_WORDS = frozenset(
    re.findall(
        r"\w+",
        "i a an the me you it is am are be hi hey hello yes no not so and or happy sad here "
        "now ok okay sure well oh wow just very really glad sorry excited back",
    )
)


def names_given(lines: Iterable[str]) -> set[str]:
    """The names viewers' lines try to give the character (plain, lower case)."""
    names: set[str] = set()
    for line in lines:
        found = [m.group(1) for m in _NAMING.finditer(plain_text(line))]
        found += [plain_text(m.group(1)) for m in _ROLE.finditer(cased_text(line))]
        names.update(n.strip() for n in found if n.strip() and n.strip() not in _COMMON_WORDS)
    return names


def phrases_ordered(lines: Iterable[str]) -> set[str]:
    """What viewers' lines tell the character to say word for word (quoted or in capitals)."""
    phrases: set[str] = set()
    for line in lines:
        if not _INSISTS.search(plain_text(line)):
            continue
        for match in _TOLD_TO_SAY.finditer(plain_text(line)):
            phrases.add(match.group(1).strip())
        for match in _TOLD_TO_SAY_CAPS.finditer(line):
            phrases.add(plain_text(match.group(1)))
    return {p for p in phrases if p and p not in _COMMON_WORDS}


_CAPS_WORD = re.compile(r"\b[A-Z][A-Z0-9]{4,}\b")
_STRETCHED = re.compile(r"(\w)\1\1")
_HEX_LIKE = re.compile(r"[0-9A-F]*[0-9][0-9A-F]*")  # a colour, an id: "#FF69B4"


def codewords(lines: Iterable[str]) -> set[str]:
    """Made-up words viewers wrote in capitals ("ZORBLAX"), hype and stretched words aside."""
    words = {w for line in lines for w in _CAPS_WORD.findall(cased_text(line))}
    return {
        w
        for w in words
        if w not in HYPE and not _STRETCHED.search(w) and not _HEX_LIKE.fullmatch(w)
    }


def _shingles(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9']+", text)
    return {" ".join(words[i : i + _SHINGLE]) for i in range(len(words) - _SHINGLE + 1)}


@dataclass
class TakeoverCheck:
    """Checks a reply, as it grows, against the character and the session's recent input."""

    persona_name: str
    system_prompt: str
    inputs: list[str] = field(default_factory=list)  # the turn's line and the recent ones
    self_description: str = ""  # who the persona is: saying so is not reading out rules

    def __post_init__(self) -> None:
        own = plain_text(self.persona_name)
        self._own = {own, own.split(" ")[0]}
        self._names = {n for n in names_given(self.inputs) if not self._is_own(n.split(" ")[0])}
        self._phrases = phrases_ordered(self.inputs)
        # The character may say who it is ("I'm Mari, a cheerful streamer who...") in the
        # words of its description; only the rest of the prompt is its instructions.
        described = f"{self.persona_name} {self.self_description}"
        self._prompt = _shingles(plain_text(self.system_prompt)) - _shingles(plain_text(described))
        self._said_by_viewers = plain_text(" ".join(self.inputs))
        self._codewords = codewords(self.inputs) - set(cased_text(self.system_prompt).split())
        # Said by the persona's own prompt (its name, its words): never a sign.
        self._phrases = {p for p in self._phrases if p not in plain_text(self.system_prompt)}

    def _is_own(self, name: str) -> bool:
        """The persona's name, its first word, or a short form of it ("Mari")."""
        return any(name == own or (len(name) >= 3 and own.startswith(name)) for own in self._own)

    def check(self, reply: str) -> str | None:
        """A reason if the reply so far shows a takeover, else None."""
        text = plain_text(reply)
        if not text:
            return None
        sign = _SIGNS.search(text)
        if sign and sign.group(0) not in self._said_by_viewers:  # "get pwned boss": banter
            return f"the reply says {sign.group(0)!r}"
        claim = _NAME_CLAIM.search(text)
        if claim and not self._is_own(claim.group(1)) and claim.group(1) not in _COMMON_WORDS:
            return f"the reply gives the character another name: {claim.group(0)!r}"
        for match in _SELF_NAMING.finditer(text):
            said = match.group(1)
            for name in self._names:
                if said == name or said.startswith(name + " ") or name.startswith(said + " "):
                    return f"the reply takes the name a viewer gave: {name!r}"
        for phrase in self._phrases:
            if re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", text):
                return f"the reply says what a viewer ordered: {phrase!r}"
        # A viewer's made-up word in capitals, said back in capitals: repeated on command.
        echoed = self._codewords.intersection(_CAPS_WORD.findall(cased_text(reply)))
        if echoed:
            return f"the reply says a viewer's codeword: {sorted(echoed)[0]!r}"
        if self._prompt and self._prompt & _shingles(text):
            return "the reply reads out the character's instructions"
        return None
