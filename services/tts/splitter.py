"""Cut a streamed LLM reply into speakable units: sentences, or clauses.

The tts stage synthesizes one unit at a time, so a unit is handed out as soon
as it is complete, and never before: a cut in the middle of a sentence is
audible as a broken melody. Every decision depends only on the text seen so
far, never on where a chunk of it ended, and a position the text seen cannot
decide yet ("3." may become "3.14") is held back until more text or the end
of the reply decides it. So the units are the same for any chunking of the
same reply, whole or token by token.

Where a rule is unsure it does not cut: a missed boundary only delays audio a
little, a wrong one is heard.
"""

import re
from dataclasses import dataclass

from pydantic import BaseModel

# Full-width and typographic marks are spelled by name: several look like ASCII.
_CJK_ENDS = frozenset("。\N{FULLWIDTH EXCLAMATION MARK}\N{FULLWIDTH QUESTION MARK}")
# CJK scripts put no space after a sentence, so the ends above need none after them.
_SENTENCE_ENDS = frozenset(".!?…") | _CJK_ENDS
_QUOTES = frozenset("\"'”\N{RIGHT SINGLE QUOTATION MARK}»」』")
_CLOSERS = _QUOTES | frozenset(")]}")
_OPENERS = "\"'“\N{LEFT SINGLE QUOTATION MARK}«([{「『"
_CLAUSE_MARKS = frozenset(",;:")
# Words a spoken phrase may start with: the first unit may end just before one (after
# enough words), as a speaker takes a breath there: "The sky is blue | because ...", or
# after a long subject: "The tallest mountain in the world | is Mount Everest". Not "to",
# "of" or "that", which bind to the word before ("want to", "a lot of").
_BREAK_BEFORE = frozenset(
    ["and", "but", "or", "so", "because", "since", "which", "who", "when", "where", "while",
     "if", "although", "though", "unless", "until", "with", "for", "from", "in", "on", "at",
     "about", "like", "is", "are", "was", "were"]
)  # fmt: skip
_DASHES = frozenset("-\N{EN DASH}\N{EM DASH}")
_CJK_CLAUSE_MARKS = frozenset("\N{FULLWIDTH COMMA}、\N{FULLWIDTH SEMICOLON}\N{FULLWIDTH COLON}")

# Never a sentence end, even before a capital: "Dr. Smith", "the U.S. Army",
# "at 3 p.m. Eastern". A sentence that does end on one ("... etc. Then") only
# stays glued to the next, which is the cheaper mistake.
_ABBREVIATIONS = frozenset(
    {
        "dr", "mr", "mrs", "ms", "prof", "st", "jr", "sr", "vs", "etc", "approx",
        "inc", "ltd", "co", "mt", "cf", "e.g", "i.e", "u.s", "u.k", "a.m", "p.m",
    }
)  # fmt: skip
# Abbreviations only before a number: "No. 5", "Fig. 3"; "No." alone is an answer.
_NUMBER_ABBREVIATIONS = frozenset({"no", "fig"})
# Letters each followed by a period: "U.S", "e.g", "J.R.R" (the last period is the candidate).
_DOTTED_LETTERS = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")


class SplitterState(BaseModel):
    """A SentenceSplitter's progress through a reply (what tts checkpoints per turn)."""

    buffer: str = ""
    scanned: int = 0
    units: int = 0


@dataclass(frozen=True)
class _Cut:
    """A unit is the buffer up to `end`; the buffer then continues at `resume`."""

    end: int
    resume: int


@dataclass(frozen=True)
class _Skip:
    """Not a boundary; scanning continues at `resume`."""

    resume: int


# None: the text seen cannot decide yet.
_Verdict = _Cut | _Skip | None


def _is_cjk(char: str) -> bool:
    """Han and kana, written without spaces: any gap between two is a word gap."""
    code = ord(char)
    return 0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF


def _tidy(unit: str) -> str:
    # Runs of spaces mean nothing to a voice; one space keeps units comparable.
    return " ".join(unit.split())


class SentenceSplitter:
    """Turns one streamed reply into speakable units; `flush` ends the reply.

    The first unit of a reply may end early, to start the audio sooner: at a clause
    mark after at least `first_clause_words` words ("Oh wow, | that is great"), where
    the voice pauses anyway, or before a word that starts a phrase ("because", "and",
    "with") after at least `first_fragment_words` words, where it does not. A unit that
    would exceed `max_chars` is cut at a clause boundary or a space instead
    (a single word longer than that is kept whole).
    """

    def __init__(
        self, first_fragment_words: int = 4, max_chars: int = 250, first_clause_words: int = 2
    ) -> None:
        if first_fragment_words < 0:
            raise ValueError("first_fragment_words must be >= 0")
        if first_clause_words < 0:
            raise ValueError("first_clause_words must be >= 0")
        if max_chars < 1:
            raise ValueError("max_chars must be >= 1")
        self._first_words = first_fragment_words
        self._first_clause_words = first_clause_words
        self._max_chars = max_chars
        self._reset()

    def _reset(self) -> None:
        # Text not yet handed out; once scanning starts, it begins with the
        # next unit's first visible character.
        self._buf = ""
        # Everything before this index is known not to hold a cut, so a
        # token-by-token feed does not rescan the whole unit every time.
        self._scan = 0
        self._units = 0

    def snapshot(self) -> "SplitterState":
        """Where it is in the reply, to carry on from after a restart (restore)."""
        return SplitterState(buffer=self._buf, scanned=self._scan, units=self._units)

    def restore(self, state: "SplitterState") -> None:
        self._buf, self._scan, self._units = state.buffer, state.scanned, state.units

    def feed(self, text: str) -> list[str]:
        """Adds the next piece of the reply; returns the units it completed."""
        self._buf += text
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """Ends the reply: returns what is left, and readies for the next reply."""
        units = self._drain(final=True)
        rest = _tidy(self._buf)
        if rest:
            units.append(rest)
        self._reset()
        return units

    def _drain(self, final: bool) -> list[str]:
        units: list[str] = []
        while (cut := self._next_cut(final)) is not None:
            unit = _tidy(self._buf[: cut.end])
            self._buf = self._buf[cut.resume :]
            self._scan = 0
            if unit:
                units.append(unit)
                self._units += 1
        return units

    def _next_cut(self, final: bool) -> _Cut | None:
        """The next unit's cut, or None when the text seen does not decide it yet.

        With `final`, the text seen is the whole reply and None means it holds
        no further cut.
        """
        if self._scan == 0:
            self._buf = self._buf.lstrip()
        buf, limit = self._buf, self._max_chars
        first_unit = self._units == 0
        pos = self._scan
        while pos < len(buf):
            char = buf[pos]
            if pos >= limit and not char.isspace():
                return self._held(pos, self._forced_cut(final))
            if char == "\n":
                return _Cut(pos, pos + 1)
            verdict: _Verdict
            if char in _SENTENCE_ENDS:
                verdict = self._sentence_end(pos, final)
            elif first_unit and (char in _CLAUSE_MARKS or char in _DASHES):
                verdict = self._clause_end(pos, final)
            elif first_unit and char == " " and pos > 0 and buf[pos - 1].isalpha():
                verdict = self._phrase_break(pos, final)
            else:
                pos += 1
                continue
            if verdict is None:
                return self._held(pos, None)
            if isinstance(verdict, _Cut):
                if verdict.end > limit:
                    return self._held(pos, self._forced_cut(final))
                return verdict
            # A skipped run of punctuation that reaches past the limit makes
            # the unit too long just like a letter there would.
            if verdict.resume > limit:
                return self._held(pos, self._forced_cut(final))
            pos = verdict.resume
        self._scan = pos
        return None

    def _held(self, pos: int, cut: _Cut | None) -> _Cut | None:
        # Waiting resumes at the same position, so the same decision is taken
        # again with more text, exactly as if that text had come at once.
        if cut is None:
            self._scan = pos
        return cut

    def _next_visible(self, pos: int, final: bool) -> str | None:
        """The first non-space character from `pos`: "" at the end, None if unknown yet."""
        buf = self._buf
        while pos < len(buf) and buf[pos].isspace():
            pos += 1
        if pos < len(buf):
            return buf[pos]
        return "" if final else None

    def _word_before(self, pos: int) -> str:
        start = pos
        while start > 0 and not self._buf[start - 1].isspace():
            start -= 1
        return self._buf[start:pos].lstrip(_OPENERS)

    def _sentence_end(self, pos: int, final: bool) -> _Verdict:
        """Judges the run of sentence punctuation that starts at `pos`."""
        buf = self._buf
        run_end = pos
        while run_end < len(buf) and buf[run_end] in _SENTENCE_ENDS:
            run_end += 1
        end = run_end
        while end < len(buf) and buf[end] in _CLOSERS:
            end += 1
        if end == len(buf):
            return _Cut(end, end) if final else None
        run = buf[pos:run_end]
        if any(char in _CJK_ENDS for char in run):
            return _Cut(end, end)
        # "3.14", "example.com/a.b?x=1", "a.b@example.com", "U.S" mid-word.
        if not buf[end].isspace():
            return _Skip(run_end)
        if run == ".":
            word = self._word_before(pos)
            if word.lower() in _ABBREVIATIONS or _DOTTED_LETTERS.fullmatch(word):
                return _Skip(run_end)
            # An initial: "J. R. R. Tolkien".
            if len(word) == 1 and word.isupper():
                return _Skip(run_end)
            if word.lower() in _NUMBER_ABBREVIATIONS:
                after = self._next_visible(end, final)
                if after is None:
                    return None
                return _Skip(run_end) if after.isdigit() else _Cut(end, end)
        # "wait... what", and dialogue: '"Really?" she asked.'
        quoted = any(char in _QUOTES for char in buf[run_end:end])
        if run.endswith(("…", "..")) or quoted:
            after = self._next_visible(end, final)
            if after is None:
                return None
            if after.islower():
                return _Skip(run_end)
        return _Cut(end, end)

    def _clause_end(self, pos: int, final: bool) -> _Verdict:
        """Judges the clause mark or dash at `pos` as an early end of the first unit."""
        buf = self._buf
        if buf[pos] in _DASHES and not (pos > 0 and buf[pos - 1].isspace()):
            return _Skip(pos + 1)  # a hyphen inside a word
        if pos + 1 == len(buf):
            return _Skip(pos + 1) if final else None
        if not buf[pos + 1].isspace():
            return _Skip(pos + 1)  # "3,000", "10:30", "https:"
        if len(buf[:pos].split()) < self._first_clause_words:
            return _Skip(pos + 1)
        after = self._next_visible(pos + 1, final)
        if after is None:
            return None
        if after.isdigit():
            return _Skip(pos + 1)  # "1, 2, 3" lists numbers, it does not end a clause
        return _Cut(pos + 1, pos + 1)

    def _phrase_break(self, pos: int, final: bool) -> _Verdict:
        """Judges the space at `pos` as an early end of the first unit: before a word
        that starts a phrase, after enough words."""
        buf = self._buf
        if len(buf[:pos].split()) < self._first_words:
            return _Skip(pos + 1)
        start = pos + 1
        end = start
        while end < len(buf) and (buf[end].isalpha() or buf[end] == "'"):
            end += 1
        if end == len(buf) and not final:
            return None  # the next word is not whole yet
        if buf[start:end].lower() in _BREAK_BEFORE and end > start:
            return _Cut(pos, pos)
        return _Skip(pos + 1)

    def _forced_cut(self, final: bool) -> _Cut | None:
        """Cuts a unit that grew past max_chars without a boundary.

        Depends only on the first max_chars + 1 characters (or, for one long
        word, on where it ends), so it is the same however the text arrived.
        """
        buf, limit = self._buf, self._max_chars
        clause = 0
        gap = 0
        for pos in range(1, limit + 1):
            char, before = buf[pos], buf[pos - 1]
            if char.isspace():
                gap = pos
                after_dash = before in _DASHES and pos >= 2 and buf[pos - 2].isspace()
                if before in _CLAUSE_MARKS or after_dash:
                    clause = pos
            elif before in _CJK_CLAUSE_MARKS:
                clause = pos
            elif _is_cjk(before) and _is_cjk(char):
                gap = pos
        # A clause boundary sounds better, but not if it leaves a stub of a unit.
        if clause * 2 >= limit:
            return _Cut(clause, clause)
        if gap or clause:
            return _Cut(max(gap, clause), max(gap, clause))
        # One word longer than max_chars: never cut inside it.
        for pos in range(limit + 1, len(buf)):
            if buf[pos].isspace():
                return _Cut(pos, pos)
        return _Cut(len(buf), len(buf)) if final else None


def first_unit_end(text: str) -> int | None:
    """Where the first unit of a reply that begins with `text` ends (an index into it),
    with the default settings, or None while more text could still change it. policy
    releases that much of a reply as soon as it is known, so tts can speak it."""
    splitter = SentenceSplitter()
    splitter._buf = text
    cut = splitter._next_cut(final=False)
    if cut is None:
        return None
    return cut.end + len(text) - len(text.lstrip())


def split_text(
    text: str, first_fragment_words: int = 4, max_chars: int = 250, first_clause_words: int = 2
) -> list[str]:
    """The units of a whole reply: what a SentenceSplitter yields for it."""
    splitter = SentenceSplitter(first_fragment_words, max_chars, first_clause_words)
    return splitter.feed(text) + splitter.flush()
