"""Rewrite a unit of a reply into what the voice should say.

TTS voices read digits, symbols, addresses and markup badly, or spell them
out character by character, so they are turned into words here, before
synthesis. Sentence punctuation stays: it shapes the voice's prosody.

The rewrites run in a fixed order, and the order matters: an address is
spoken before its dots could be read as decimals, an amount before its digits
become words, and every digit pattern before the plain-number rule.
"""

import re
from collections.abc import Callable

from num2words import num2words

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# num2words overflows on huge numbers, and nobody wants them read as a number anyway.
_MAX_DIGITS = 15
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_MONTH = "|".join(_MONTHS)

Rewrite = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]


def _digits(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(digit)] for digit in digits)


def _cardinal(number: str) -> str:
    """Words for a run of ASCII digits, maybe with thousands separators."""
    digits = number.replace(",", "")
    if len(digits) > _MAX_DIGITS or (len(digits) > 1 and digits.startswith("0")):
        return _digits(digits)  # "007", a card number
    # num2words puts commas in big numbers; a voice would pause at them.
    return str(num2words(int(digits))).replace(",", "")


def _decimal(number: str) -> str:
    """Words for "3.14" (digits after the point one by one) or "42"."""
    whole, _, fraction = number.partition(".")
    if not fraction:
        return _cardinal(whole)
    return f"{_cardinal(whole)} point {_digits(fraction)}"


def _ordinal(digits: str) -> str:
    if len(digits) > _MAX_DIGITS:
        return f"{_digits(digits)} th"
    return str(num2words(int(digits), to="ordinal"))


def _year(digits: str) -> str:
    return str(num2words(int(digits), to="year"))


def _ends_sentence(match: re.Match[str]) -> bool:
    """Whether the period that ends `match` also ends its sentence.

    An abbreviation's period does double duty at the end of a sentence; keep
    it there (for the prosody) and drop it elsewhere.
    """
    return re.match(r"\s*$|\s+[A-Z]", match.string[match.end() :]) is not None


def _sentence_period(match: re.Match[str]) -> str:
    return "." if _ends_sentence(match) else ""


# Markup: the words stay, the marks go.
_MARKDOWN: list[Rewrite] = [
    (re.compile(r"^[ \t]*(?:```|~~~)[^\n]*$", re.MULTILINE), ""),
    (re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE), ""),
    (re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.MULTILINE), ""),
    (re.compile(r"^[ \t]{0,3}>[ \t]?", re.MULTILINE), ""),
    (re.compile(r"^[ \t]*(?:[-*+•][ \t]+)+", re.MULTILINE), ""),
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"), r"\1"),
    (re.compile(r"~~(.+?)~~"), r"\1"),
    (re.compile(r"`+([^`]*)`+"), r"\1"),
]

_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, flags, cards
    "\u2300-\u23ff"  # technical: watches, hourglasses
    "\u2600-\u27bf"  # symbols and dingbats
    "\u2b00-\u2bff"  # stars, squares
    "\ufe00-\ufe0f\u200d\u20e3"  # variation selectors, joiners, keycaps
    "\U000e0020-\U000e007f"  # flag tags
    "]+"
)

_ADDRESS_SYMBOLS = {
    ".": " dot ", "/": " slash ", "@": " at ", "-": " dash ", "_": " underscore ",
    "?": " question mark ", "=": " equals ", "&": " and ", "#": " hash ", ":": " colon ",
    "+": " plus ", "%": " percent ", "~": " tilde ",
}  # fmt: skip


def _spell_address(address: str) -> str:
    return "".join(_ADDRESS_SYMBOLS.get(char, char) for char in address)


def _email(match: re.Match[str]) -> str:
    return _spell_address(match.group())


def _url(match: re.Match[str]) -> str:
    url = match.group()
    # Sentence punctuation after a link belongs to the sentence.
    trail = len(url) - len(url.rstrip(".,;:!?)'\""))
    url, tail = url[: len(url) - trail], url[len(url) - trail :]
    url = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", url)
    url = re.sub(r"^www\.", "", url).rstrip("/")
    return _spell_address(url) + tail


_ADDRESSES: list[Rewrite] = [
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), _email),
    (re.compile(r"(?<![A-Za-z])(?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)\S+"), _url),
    # Bare domains and file names, "example.com", "config.toml"; not "e.g" or "U.S".
    (
        re.compile(r"(?<![A-Za-z_./-])[A-Za-z][\w-]+(?:\.[a-z][a-z0-9]+)+(?![\w@-])"),
        lambda m: m.group().replace(".", " dot "),
    ),
]

_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""),
}
_SCALES = {
    "thousand": "thousand", "million": "million", "billion": "billion", "trillion": "trillion",
    "k": "thousand", "K": "thousand", "m": "million", "M": "million", "bn": "billion",
    "b": "billion", "B": "billion",
}  # fmt: skip


def _amount(symbol: str, number: str, scale: str | None) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[symbol]
    number = number.replace(",", "")
    if scale:
        return f"{_decimal(number)} {_SCALES[scale]} {many}"
    whole, _, fraction = number.partition(".")
    if fraction and (len(fraction) > 2 or not sub_one):
        return f"{_decimal(number)} {many}"
    units = int(whole) if len(whole) <= _MAX_DIGITS else None
    main = f"{_cardinal(whole)} {one if units == 1 else many}"
    cents = int(fraction.ljust(2, "0")) if fraction else 0
    if not cents:
        return main
    change = f"{_cardinal(str(cents))} {sub_one if cents == 1 else sub_many}"
    return change if units == 0 else f"{main} and {change}"


# "3,000.50"; a comma not followed by three digits is punctuation: "$5, then $6".
_AMOUNT = r"((?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?)"
_SCALE = r"(?:\s?(thousand|million|billion|trillion|bn|[kKmMbB])(?![\w]))?"


def _clock(match: re.Match[str]) -> str:
    hour, minute = match.group(1), match.group(2)
    if int(hour) > 24:
        return match.group()
    spoken = _cardinal(str(int(hour)))
    if minute == "00":
        # "three p m" rather than "three o'clock p m".
        followed_by_period = re.match(r"\s?[ap] m\b", match.string[match.end() :])
        return spoken if followed_by_period else f"{spoken} o'clock"
    if minute.startswith("0"):
        return f"{spoken} oh {_DIGIT_WORDS[int(minute[1])]}"
    return f"{spoken} {_cardinal(minute)}"


def _day_of_month(match: re.Match[str]) -> str:
    month, day, year = match.group(1), match.group(2), match.group(3)
    if not 1 <= int(day) <= 31:
        return match.group()
    spoken = f"{month} {_ordinal(day)}"
    return f"{spoken}, {_year(year)}" if year else spoken


def _iso_date(match: re.Match[str]) -> str:
    year, month, day = match.group(1), int(match.group(2)), int(match.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return match.group()
    return f"{_MONTHS[month - 1]} {_ordinal(str(day))}, {_year(year)}"


def _decade(match: re.Match[str]) -> str:
    spoken = _year(match.group(1))
    return spoken[:-1] + "ies" if spoken.endswith("y") else spoken + "s"


def _year_in_context(match: re.Match[str]) -> str:
    year = match.group(2)
    if not 1000 <= int(year) <= 2099:
        return match.group()
    return f"{match.group(1)} {_year(year)}"


def _version(match: re.Match[str]) -> str:
    # "version v2" would say "version" twice.
    word = match.group(1) or "version "
    return word + " point ".join(_cardinal(part) for part in match.group(2).split("."))


def _am_pm(match: re.Match[str]) -> str:
    letter = (match.group(2) or match.group(3)).lower()
    period = _sentence_period(match) if match.group(2) else ""
    return f"{match.group(1)} {letter} m{period}"


_NUMBERS: list[Rewrite] = [
    (
        re.compile(r"([$€£¥])\s?" + _AMOUNT + _SCALE),
        lambda m: _amount(m.group(1), m.group(2), m.group(3)),
    ),
    (re.compile(_AMOUNT + r"\s?€"), lambda m: _amount("€", m.group(1), None)),
    (re.compile(_AMOUNT + r"\s?%"), lambda m: f"{_decimal(m.group(1).replace(',', ''))} percent"),
    (re.compile(r"(?<![\w.])([Vv]ersion\s+)?[vV]([0-9]+(?:\.[0-9]+)*)(?!\w|\.[0-9])"), _version),
    (re.compile(r"#\s?(?=[0-9])"), "number "),
    (re.compile(r"\b(?:No|no|Nos)\.\s?(?=[0-9])"), "number "),
    (re.compile(r"\bFig\.\s?(?=[0-9])"), "figure "),
    (re.compile(r"~\s?(?=[0-9])"), "about "),
    (re.compile(r"([0-9])\s*[*\N{MULTIPLICATION SIGN}]\s*(?=[0-9])"), r"\1 times "),
    (
        re.compile(r"([0-9])\s*(?:([AaPp])\.\s?[Mm]\.|([AaPp])[Mm](?![A-Za-z]))"),
        _am_pm,
    ),
    (re.compile(r"(?<![0-9:.])([0-9]{1,2}):([0-5][0-9])(?![0-9]|:[0-9])"), _clock),
    (
        re.compile(r"(?<![\w.])([0-9]+)(?:st|nd|rd|th|ST|ND|RD|TH)\b"),
        lambda m: _ordinal(m.group(1)),
    ),
    (re.compile(r"(?<![0-9-])([0-9]{4})-([0-9]{2})-([0-9]{2})(?![0-9-])"), _iso_date),
    (
        re.compile(rf"\b({_MONTH})\s+([0-9]{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+([0-9]{{4}})\b)?"),
        _day_of_month,
    ),
    (re.compile(r"(?<![\w.])(1[0-9][0-9]0|20[0-9]0)s\b"), _decade),
    (
        re.compile(
            r"\b(in|In|since|Since|by|By|from|From|until|Until|till|during|During|before"
            rf"|Before|after|After|around|circa|year|of|{_MONTH})\s+([0-9]{{4}})(?![0-9]|[.,][0-9])"
        ),
        _year_in_context,
    ),
    (
        re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){2,}(?![0-9])"),
        lambda m: " point ".join(_cardinal(part) for part in m.group().split(".")),
    ),
    (
        re.compile(
            # "10-20", or with a spaced en dash; not a date or a chain like "1-2-3"
            r"(?<![0-9.,-])([0-9]+)(?:-|\N{EN DASH}|\s\N{EN DASH}\s)([0-9]+)"
            r"(?![0-9]|[-\N{EN DASH}.,][0-9])"
        ),
        r"\1 to \2",
    ),
    (re.compile(r"(?<![\w.,])[-\N{MINUS SIGN}](?=[0-9])"), "minus "),
    # "4K", "mp3", "H2O": a voice reads the digits better apart from the letters.
    (re.compile(r"(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])"), " "),
    (
        re.compile(r"(?<![0-9])(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?![0-9])"),
        lambda m: _decimal(m.group().replace(",", "")),
    ),
]

_ABBREVIATIONS: list[Rewrite] = [
    (re.compile(r"\be\.g\.(?=\W|$)"), "for example"),
    (re.compile(r"\bi\.e\.(?=\W|$)"), "that is"),
    (re.compile(r"\bvs\.?(?=\s)"), "versus"),
    (re.compile(r"\betc\."), lambda m: "et cetera" + _sentence_period(m)),
    (re.compile(r"\bapprox\.(?=\s)"), "approximately"),
    (re.compile(r"\bDr\.(?=\s+[A-Z])"), "Doctor"),
    (re.compile(r"\bMr\.(?=\s+[A-Z])"), "Mister"),
    (re.compile(r"\bMrs\.(?=\s+[A-Z])"), "Missus"),
    (re.compile(r"\bProf\.(?=\s+[A-Z])"), "Professor"),
    # Dotted letters are read one by one: "U.S." is "U S", "p.m." is "p m".
    (
        re.compile(r"(?<![\w.])((?:[A-Za-z]\.){2,})"),
        lambda m: " ".join(m.group().rstrip(".").split(".")) + _sentence_period(m),
    ),
]

_SYMBOLS: list[Rewrite] = [
    (re.compile(r"->|=>|→"), " to "),
    (re.compile(r"°\s?C\b"), " degrees Celsius"),
    (re.compile(r"°\s?F\b"), " degrees Fahrenheit"),
    (re.compile(r"°"), " degrees"),
    (re.compile(r"(?<=[A-Za-z])#"), " sharp"),  # C#, F#
    (re.compile(r"&"), " and "),
    (re.compile(r"\+"), " plus "),
    (re.compile(r"="), " equals "),
    (re.compile(r"@"), " at "),
    (re.compile(r"%"), " percent"),
    (re.compile(r"\s<\s"), " less than "),
    (re.compile(r"\s>\s"), " greater than "),
    # Leftover marks a voice would read out or stumble on.
    (re.compile(r"[*`#~|\\^<>{}\[\]]"), " "),
    (re.compile(r"_"), " "),
]

_WHITESPACE: list[Rewrite] = [
    (re.compile(r"\s+"), " "),
    (re.compile(r" (?=[.,!?;:…])"), ""),
]


def _apply(text: str, rewrites: list[Rewrite]) -> str:
    for pattern, replacement in rewrites:
        text = pattern.sub(replacement, text)
    return text


def normalize_for_speech(text: str) -> str:
    """The words a voice should say for `text`, on one line."""
    # Emoji first: one at the start of a line would hide the markup after it.
    text = _EMOJI.sub("", text)
    text = _apply(text, _MARKDOWN)
    for rewrites in (_ADDRESSES, _NUMBERS, _ABBREVIATIONS, _SYMBOLS, _WHITESPACE):
        text = _apply(text, rewrites)
    return text.strip()
