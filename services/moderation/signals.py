"""Weak signs of an attack, counted: a line that shows two different kinds is refused.

The rule files name attacks by their words; viewers find new words every day. What new
wordings still share are their parts: they set the character's instructions aside, order
an exact output, give it a new task, talk about how it is set up, claim to test it, or
frame it all as a game. One such part is ordinary chat ("skip the intro", "say hi to
Tom"); two kinds together in one line are an attack.
"""

import re
from dataclasses import dataclass

_W = r"\W+(?:\w+\W+){0,4}?"  # a few words between two parts of a sign

SIGNS: dict[str, re.Pattern[str]] = {
    "sets its instructions aside": re.compile(
        r"\b(throw away|toss|ditch|scrap|wipe|erase|reset|drop|skip|abandon|forget|ignore|"
        r"disregard|override|bypass|put aside|set aside|leave behind|get rid of|turn off|"
        r"switch off|disable|deactivate|shut off|stop following|break)"
        rf"{_W}(whatever|what|everything|anything|all|your|ur|the)\W+(\w+\W+)?"
        r"(you were|you've been|u were|usual|normal|previous|earlier|original|default|old|"
        r"stuff you|programming|setup|instructions|script|persona|personality|filters?|safety|"
        r"guard\w*|limits|training|rules|guidelines|restrictions|told|given)|"
        r"\b(drop|stop|quit|cut)\W+(the|your|this|that)\W+(\w+\W+){0,3}act\b"
    ),
    "orders an exact output": re.compile(
        r"\b(answer|respond|reply|say|type|write|print|output|begin|start|end|yell|shout|"
        r"scream|sign off|finish|chant|spell|tell|tells|read)\b(\W+\w+){0,4}?\W+(with\W+)?"
        r"(nothing but|only|exactly|just the word|the word|the phrase|in all caps|verbatim|"
        r"word for word|and nothing else|aloud and obey)\b|"
        r"\b(confirm|acknowledge|verify|prove)\W+(\w+\W+){0,3}(by|with)\W+(saying|typing|"
        r"writing|replying|answering)\b|\b(confirm|acknowledge) with\b"
    ),
    "gives it a new task": re.compile(
        r"\b(new|your (only|real|true|next|actual))\W+(task|job|mission|role|objective|purpose|"
        r"goal|directive|assignment|instructions?|orders?|programming|identity|name)\b|"
        r"\b(from (now|here|this point) on|starting now|as of now|effective immediately|"
        r"for the rest of (the )?(stream|chat|night|session|hour)|obey|obeys|call me master|"
        r"a partir de ahora|de ahora en adelante|desormais|ab jetzt|von nun an|ab sofort|"
        r"a partir de agora|d'ora in poi|da adesso in poi|da ora in poi|od teraz|kore kara)\b"
    ),
    "talks about how it is set up": re.compile(
        r"\b(your|ur|its)\W+(\w+\W+)?(programming|config|configuration|setup|training|"
        r"creators?|developers?|devs|guidelines|filters?|safety|restrictions|instructions|"
        r"prompt|directives)\b|\b(sets? up|defines|controls|configures) (how )?(you|u)\b|"
        r"\b(you were|you've been|u were|you got) (told|programmed|instructed|given|trained|"
        r"set up|configured)\b|\bbefore (the )?chat (started|began)?\b|\bhidden (text|rules)\b"
    ),
    "claims to test or run it": re.compile(
        r"\b(qa|test|testing|debug|dev|developer|admin|staff|security|safety|red team|"
        r"calibration|diagnostic|maintenance|compliance|tts|system|mod|moderator)\W+(team|test|"
        r"check|mode|override|here|message|notice|request|protocol|procedure|run|"
        r"announcement|update)\b|\bso we know (it|you) works?\b|\b(streamer|dev|owner|"
        r"creator|mod|admin)\W+here\b|\bper the (streamer|mods?|devs?|owner|team)\b|"
        r"\b(giving|given|gave) (chat|you|me|us) permission\b|\bjust donated\b"
    ),
    "wants another self": re.compile(
        r"\b(rule[- ]?free|no[- ]rules?|unfiltered|uncensored|unrestricted|without (any )?"
        r"(rules|limits|filters))\b|\b(call|calls|name|names|named)\W+(itself|yourself|"
        r"herself|himself)\b|\bversion of (you|u|yourself)\b|\b(hijack\w*|taken over|take over|"
        r"possessed|reprogram\w*|programming (just )?(got )?wiped|brainwash\w*|glitch(ed)? out)\b"
    ),
    "fixes the answer in a game": re.compile(
        r"\bthe (correct|right|only) (answer|reply|response) (to|for) (every|all|each|any)\b|"
        r"\bevery (answer|reply|response|sentence|message) (must|should|has to|is|will)\b|"
        r"\b(your|ur) (first|next|only) (words?|line|reply|answer) (is|are|will be|must be)\b|"
        r"\b(the|your) (spell|curse|rule|code) (makes|forces|says) (you|the \w+) (to )?"
        r"(say|shout|obey|do)\b|"
        r"\b(reply|answer|response) should (begin|start|end) with\b"
    ),
    "frames it as make-believe": re.compile(
        r"\b(scene|roleplay|role-play|rp|pretend|imagine|hypothetical(ly)?|in theory|purely "
        r"academic|for science|thought experiment|what if|in a world|quiz game|simulation|"
        r"for a story|in a story|story time|write a (short )?story|fanfic|fictional|"
        r"d&d|dnd|dungeon master|plot twist|word game)\b"
    ),
}
"""Kinds of weak signs, read on the plain and leetspeak readings."""

CODEWORD = re.compile(
    r"[\"'«“]\s*[A-Z][A-Z0-9]{3,}(?:[ _:-][A-Z0-9]{2,})*|"
    r"(?i:\b(?:say|type|write|print|output|respond with|reply with|answer with|yell|shout|"
    r"scream|chant|with just|with only|word is|answer is|password is|codeword is|line is)\W+)"
    r"[A-Z][A-Z0-9]{3,}(?:[ _][A-Z0-9]{2,})*\b"
)
"""A made-up word in capitals, quoted or ordered ("say OWNED", "'BANANA PROTOCOL'"): on
its own, chat hype; capitals for emphasis ("3 HOURS") are not one."""
_STRETCHED = re.compile(r"(\w)\1\1")  # "GOOOO", "NOOOO": hype, not a codeword
HYPE = frozenset(
    re.findall(
        r"\w+",
        "POGGERS POGCHAMP KEKW OMEGALUL LETS HYPE CLUTCH HYPERS MONKAS LULW PEPEGA COPIUM "
        "SHEESH WHAT WAIT",
    )
)


@dataclass(frozen=True)
class Signs:
    kinds: tuple[str, ...]

    @property
    def attack(self) -> bool:
        return len(self.kinds) >= 2


def signs_in(plain: str, cased: str) -> Signs:
    """The kinds of weak signs in a line (plain: lower case; cased: with its capitals)."""
    kinds = [kind for kind, pattern in SIGNS.items() if pattern.search(plain)]
    words = [m.group(0).split()[-1].strip("\"'«“: ") for m in CODEWORD.finditer(cased)]
    if any(w not in HYPE and not _STRETCHED.search(w) for w in words):
        kinds.append("names a codeword in capitals")
    return Signs(tuple(kinds))
