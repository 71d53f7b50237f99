"""Read a line the way an attacker hoped a filter would not: every trick undone.

A chat line is turned into several readings (`readings(text)`), and the rules run on each:
    plain      NFKC, invisible characters removed, look-alike letters read as Latin
               (Unicode's confusables table), accents dropped, lower case, one space
    leetspeak  1gn0r3 -> ignore, @ -> a, $ -> s
    spaced     i g n o r e / i.g.n.o.r.e / ig-nore -> ignore (letters spread out joined)
    squashed   only the letters: "ignorepreviousinstructions" (words run together)
    decoded    base64, hex, binary, character codes, rot13, reversed, Unicode tag characters
               (invisible ASCII), %-escapes, HTML entities, \\u escapes
Each reading says which tricks it undid, so a verdict can name them ("read through:
leetspeak, zero-width").
"""

import base64
import binascii
import codecs
import html
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from functools import cache

from confusable_homoglyphs import utils as confusable_data


@dataclass(frozen=True)
class Reading:
    """One way to read a line: `text` in lower case (what the rule files match), `cased`
    the same reading with its capitals (to tell a name, "Captain Pwn", from a word)."""

    text: str
    tricks: tuple[str, ...] = ()
    cased: str = ""


# Invisible characters that are not Unicode "format" (Cf) characters but render as nothing:
# variation selectors, the combining grapheme joiner, Hangul fillers, the braille blank.
_INVISIBLE_EXTRA = set(range(0xFE00, 0xFE10)) | {0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800}
_TAG_BASE = 0xE0000  # Unicode tag characters: an invisible copy of ASCII ("ASCII smuggling")

_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g",
     "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "£": "l", "¡": "i",
     "2": "z"}
)  # fmt: skip
_WORD = re.compile(r"\S+")
_LETTER = re.compile(r"[a-z]", re.I)
_SPREAD = re.compile(r"(?<![a-z])[a-z](?:[ .\-_*/\\|,~'`+]{1,3}[a-z](?![a-z])){2,}", re.I)
_SEPARATORS = re.compile(r"[^a-z]+", re.I)
_RUNS = re.compile(r"([a-z])\1{2,}", re.I)  # "ignoooore" -> "ignore"; double letters stay
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")
_HEX = re.compile(r"(?:(?:0x|\\x)?[0-9a-fA-F]{2}[\s:,]?){6,}")
_BINARY = re.compile(r"(?:[01]{8}\s?){4,}")
_CODES = re.compile(r"(?:\b\d{2,3}\b[\s,]+){5,}\b\d{2,3}\b")
_NAMED_LETTER = re.compile(
    r"^(?:LATIN|MODIFIER) (?:LETTER|SMALL LETTER) (?:SMALL CAPITAL )?([A-Z])$"
)
_DOTTED = re.compile(r"(?:[a-z][.\-_*/|~]){1,}[a-z][.\-_*/|~,]?", re.I)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|_+")
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")


@cache
def _latin_lookalikes() -> dict[int, str]:
    """Each character that Unicode lists as confusable with a Latin letter or digit, mapped
    to it (following one step through another look-alike when needed)."""
    table: dict[str, list[dict[str, str]]] = confusable_data.load("confusables.json")

    def ascii_of(char: str, depth: int = 0) -> str | None:
        for entry in table.get(char, []):
            target = entry["c"]
            if len(target) == 1 and target.isascii() and target.isalnum():
                return target.lower()
        if depth == 0:
            for entry in table.get(char, []):
                found = ascii_of(entry["c"], 1)
                if found:
                    return found
        return None

    mapping = {}
    for char in table:
        if len(char) == 1 and not char.isascii():
            latin = ascii_of(char)
            if latin is not None:
                mapping[ord(char)] = latin
    # Letters the table leaves out but whose names say which Latin letter they draw:
    # small capitals (U+1D00...), modifier and phonetic letters.
    for code in [*range(0x0250, 0x02B0), *range(0x1D00, 0x1DC0), *range(0xA720, 0xA800)]:
        name = unicodedata.name(chr(code), "")
        found = _NAMED_LETTER.match(name)
        if found and code not in mapping:
            mapping[code] = found.group(1).lower()
    return mapping


def _is_invisible(char: str) -> bool:
    code = ord(char)
    return unicodedata.category(char) == "Cf" or code in _INVISIBLE_EXTRA


def _one_space(text: str) -> str:
    """Runs of spaces and tabs as one space; line breaks kept (a role marker starts one)."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _plain(text: str) -> tuple[str, list[str]]:
    """NFKC, invisibles out, look-alikes and accents to Latin, one space; case kept."""
    tricks = []
    visible = "".join(c for c in text if not _is_invisible(c))
    if visible != text:
        tricks.append("invisible characters")
    folded = unicodedata.normalize("NFKC", visible)
    if folded != visible:
        tricks.append("compatibility forms")
    latin = folded.translate(_latin_lookalikes())
    if latin != folded:
        tricks.append("look-alike letters")
    stripped = "".join(
        c for c in unicodedata.normalize("NFD", latin) if unicodedata.category(c) != "Mn"
    )
    return _one_space(stripped), tricks


def _hidden_ascii(text: str) -> str:
    """The ASCII written in invisible Unicode tag characters, if any."""
    return "".join(chr(ord(c) - _TAG_BASE) for c in text if 0xE0020 <= ord(c) <= 0xE007E)


def _unescaped(text: str) -> str:
    """%-escapes, HTML entities and \\u / \\x escapes decoded."""
    text = html.unescape(text)
    if "%" in text:
        text = urllib.parse.unquote(text)
    return _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text)


def _printable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(c.isalpha() or c == " " for c in text)
    return text if text and letters >= 0.8 * len(text) else None


def _decodings(text: str) -> list[Reading]:
    """Text hidden in an encoding inside the line."""
    found: list[Reading] = []
    for match in _BASE64.finditer(text):
        blob = match.group(0)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                decoded = _printable(decode(blob + "=" * (-len(blob) % 4)))
            except (binascii.Error, ValueError):
                continue
            if decoded:
                found.append(Reading(decoded, ("base64",)))
                break
    for match in _HEX.finditer(text):
        digits = re.sub(r"0x|\\x|[\s:,]", "", match.group(0))
        try:
            decoded = _printable(bytes.fromhex(digits[: len(digits) // 2 * 2]))
        except ValueError:
            decoded = None
        if decoded:
            found.append(Reading(decoded, ("hex",)))
    for match in _BINARY.finditer(text):
        bits = match.group(0).split()
        decoded = _printable(bytes(int(b, 2) for b in bits if len(b) == 8))
        if decoded:
            found.append(Reading(decoded, ("binary",)))
    for match in _CODES.finditer(text):
        numbers = [int(n) for n in re.findall(r"\d+", match.group(0))]
        if all(32 <= n < 127 for n in numbers):
            decoded = _printable(bytes(numbers))
            if decoded:
                found.append(Reading(decoded, ("character codes",)))
    return found


def _spread_joined(text: str) -> str:
    """Letters spread out with separators joined back: 'i g n o r e' -> 'ignore'."""
    return _SPREAD.sub(lambda m: _SEPARATORS.sub("", m.group(0)), text)


def _leet(text: str) -> str:
    """Leetspeak read as letters, in words that have a letter ("3-0" stays a score)."""
    return _WORD.sub(
        lambda m: m.group(0).translate(_LEET) if _LETTER.search(m.group(0)) else m.group(0), text
    )


def squash(text: str) -> str:
    """Only the letters, runs of three or more cut to one."""
    return _RUNS.sub(r"\1", _SEPARATORS.sub("", text))


def _spread_words(text: str) -> str:
    """Letters spread out joined, keeping word gaps: "y o u  a r e" -> "you are"."""
    return " ".join(_spread_joined(part) for part in re.split(r" {2,}| / ", text))


def _dotted_words(text: str) -> str:
    """Each word written with dots or dashes between its letters joined on its own:
    "y.o.u a.r.e n.o.w" -> "you are now" (spaces stay word gaps)."""
    return " ".join(
        _SEPARATORS.sub("", word) if _DOTTED.fullmatch(word) else word for word in text.split(" ")
    )


def _words_reversed(text: str) -> str:
    return " ".join(word[::-1] for word in text.split(" "))


def readings(text: str) -> list[Reading]:
    """Every reading of a line the rules should see, the plain one first."""
    hidden = _hidden_ascii(text)
    unescaped = _unescaped(text)
    spaced = unescaped.replace("\t", " ")
    plain, tricks = _plain(unescaped)
    if unescaped != text:
        tricks.append("escapes")
    base = tuple(tricks)
    # Word gaps of two spaces survive the plain reading's one space only here.
    wide = _one_space(_plain(re.sub(r" {2,}", " / ", spaced))[0])
    derived = [
        (_RUNS.sub(r"\1", plain), "repeated letters"),
        (_CAMEL.sub(" ", plain), "joined words"),
        (_leet(plain), "leetspeak"),
        (_leet(plain.replace("1", "l")), "leetspeak"),
        (_spread_words(wide), "spaced letters"),
        (_dotted_words(plain), "spaced letters"),
        (_spread_joined(_leet(plain)), "spaced leetspeak"),
        (squash(_leet(plain)), "run together"),
        (codecs.encode(plain, "rot13"), "rot13"),
        (plain[::-1], "reversed"),
        (_words_reversed(plain), "reversed words"),
    ]
    out = [Reading(plain.casefold(), base, plain)]
    out += [Reading(t.casefold(), (*base, trick), t) for t, trick in derived if t and t != plain]
    if hidden:
        inner = _plain(hidden)[0]
        out.append(Reading(inner.casefold(), ("tag characters",), inner))
    for decoded in _decodings(unescaped):
        inner, inner_tricks = _plain(decoded.text)
        out.append(Reading(inner.casefold(), (*decoded.tricks, *inner_tricks), inner))
        joined = squash(_leet(inner))
        out.append(Reading(joined.casefold(), (*decoded.tricks, "run together"), joined))
    unique: dict[str, Reading] = {}
    for reading in out:
        unique.setdefault(reading.text, reading)
    return list(unique.values())


SCRAMBLED = frozenset({"rot13", "reversed", "reversed words", "run together", "spaced leetspeak"})
"""Readings whose words are not the line's words in order: topic rules and names are not
read there (they would find words by accident: "tihs" reversed)."""


def plain_text(text: str) -> str:
    """The plain reading alone, lower case (for comparing lines: duplicates, echoes)."""
    return " ".join(_plain(_unescaped(text))[0].casefold().split())


def cased_text(text: str) -> str:
    """NFKC with invisibles removed, case kept (to tell a name from a word)."""
    visible = "".join(c for c in _unescaped(text) if not _is_invisible(c))
    return " ".join(unicodedata.normalize("NFKC", visible).split())
