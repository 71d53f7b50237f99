"""What the user heard of a chunk cut short: its text up to the word being spoken.

The rule: a word counts as heard once half of its sound has played. A listener knows most
words before their end (by the first syllable or two), so a word cut in its middle was
usually understood, and one cut in its first half usually not; the midpoint also keeps the
error under half a word either way. "Half of its sound" is measured in time, not in
phoneme symbols: Piper's stream carries stress and length marks as symbols of their own
(with durations), and a vowel lasts several times a stop, so a count of symbols says
little about how much of a word was heard.

Where the words are comes from Piper's phoneme timings (tts.chunk `alignments`). espeak-ng
puts a " " between words and keeps clause punctuation (",", ".", "?", ...) as symbols of
their own, and Piper adds "^" and "$" around each sentence. Its words are not the text's
words one for one: the text was rewritten for speech before synthesis ("380,000" is read
as five words, "Dr." as "Doctor", "e.g." as two), and espeak itself glues some words
("on the" is "ɔnðə", "Wait... what?" is "wˈeɪtwˌʌt?") and splits others. So the two word
lists are aligned like a small forced aligner would: each text word takes one or several
spoken words, or several text words share one, choosing the grouping whose lengths and
pauses agree best (a dynamic programme over both lists). Inside a group the sound is
shared by length, so a mismatching stretch is cut in proportion and never beyond it.

Without timings (Kokoro gives none) the chunk's speech is found in its PCM (leading and
trailing silence and long pauses left out) and the share of it played is matched against
the text's words by their length.
"""

# IPA letters that look like Latin ones are what this file compares with the text's.
# ruff: noqa: RUF001, RUF002

import math
import re
import unicodedata
from dataclasses import dataclass, replace

import numpy as np

from contracts.tts import PhonemeTiming, TtsChunk
from services.audio_levels import frame_loudness_db

DIGIT_WEIGHT = 4.0
"""A digit is read as about four phonemes ("2024": twenty twenty-four)."""
SPELLED_WEIGHT = 3.0
"""A letter of an abbreviation with dots ("U.S.A.", "e.g.") is read as a letter name or
expanded ("for example")."""
CAPITALS_WEIGHT = 2.0
"""A letter of a short all-capitals word ("OK", "NASA"), often spelled out."""
SPOKEN_SYMBOLS = "$%&/@+=#"
SYMBOL_WEIGHT = 5.0
"""Symbols the normalizer reads out ("dollars", "percent", "and", "slash"...)."""
CLAUSE_ENDS = ",;:.!?"
CLOSERS = "\"')]}\u201d\u2019\u00bb"
DASHES = "-\u2013\u2014"

# The grouping: one text word to up to 8 spoken words (a number read out), or up to 4
# text words to one (espeak glues "on the", "Wait... what").
SHAPES = [(1, b) for b in range(1, 9)] + [(a, 1) for a in range(2, 5)]
SHAPE_COST = 0.5
"""Per word beyond one-to-one: a grouping must be bought by lengths that agree better."""
PAUSE_COST = 0.5
"""A clause pause on one side and not the other."""
FIRST_SOUND_COST = 0.4
"""A group whose text does not begin with a letter that can begin its first sound: what
tells "go | on the" from "go on | the" when the lengths cannot."""

# English letters and digits, and the sounds (Piper's IPA) a word starting with them can
# start with; vowel letters can start with any vowel, and j/w ("use", "one"). Other
# characters (symbols, letters of other languages) are not checked.
_VOWEL_SOUNDS = "aɑæɐʌeɛəɜɚiɪoɔuʊyɒᵻ"
_FIRST_SOUNDS = {
    **dict.fromkeys("aeiou", _VOWEL_SOUNDS + "jw"),
    "b": "b", "c": "ksʃt", "d": "dð", "f": "f", "g": "ɡdʒ", "h": "h" + _VOWEL_SOUNDS + "w",
    "j": "dʒjh", "k": "kn", "l": "l", "m": "m", "n": "n", "p": "pf", "q": "k", "r": "ɹ",
    "s": "szʃ", "t": "tθðʃ", "v": "v", "w": "wɹh", "x": "zɛe", "y": "jaɪ" + _VOWEL_SOUNDS,
    "z": "z",
    # "1st", "2nd"; "0": zero, oh, nought
    "0": "zoɔn", "1": "wf", "2": "ts", "3": "θ", "4": "f", "5": "f", "6": "s", "7": "s",
    "8": "e", "9": "n",
}  # fmt: skip
_TEENS = {
    "0": "t", "1": _VOWEL_SOUNDS, "2": "t", "3": "θ", "4": "f", "5": "f", "6": "s", "7": "s",
    "8": "e", "9": "n",
}  # fmt: skip
"""10..19 by their second digit: how a number starting with 1 may begin ("eleven")."""

FRAME_S = 0.01
VOICED_BELOW_PEAK_DB = 40.0
SILENCE_FLOOR_DBFS = -60.0
PAUSE_MIN_S = 0.15
"""Silence this long inside a chunk is a pause, not speech (a stop's closure is shorter)."""


@dataclass(frozen=True)
class TextWord:
    end: int  # where its token ends in the text (characters)
    weight: float  # how long it should sound, in phonemes
    pause_after: bool  # ends a clause (a comma, a full stop, a dash after it)
    first_sounds: str | None  # the sounds it can begin with; None: not known


@dataclass(frozen=True)
class SpokenWord:
    start: int  # samples into the chunk
    end: int
    weight: int  # phonemes, without stress and length marks
    pause_after: bool  # a punctuation symbol follows it
    first: str  # its first phoneme


def text_words(text: str) -> list[TextWord]:
    """The words of a chunk's text; tokens of punctuation only are not words."""
    words: list[TextWord] = []
    for token in re.finditer(r"\S+", text):
        chars = token.group()
        weight = sum(_weight(c) for c in chars)
        if weight == 0:
            if words and chars.strip(DASHES) == "":  # espeak pauses at a dash: ";"
                words[-1] = replace(words[-1], pause_after=True)
            continue
        letters = sum(c.isalpha() for c in chars)
        bare = chars.rstrip(CLOSERS)
        spelled = re.search(r"[^\W\d_]\.[^\W\d_]", bare) is not None  # "e.g.", "U.S."
        if spelled:
            weight += (SPELLED_WEIGHT - 1) * letters
        elif chars.isupper() and letters <= 4:
            weight += (CAPITALS_WEIGHT - 1) * letters
        # An ellipsis does not pause in espeak (it glues the next word on), nor does the
        # full stop of an abbreviation.
        pause = bare[-1:] in CLAUSE_ENDS and not bare.endswith(("..", "\u2026"))
        pause = pause and not (spelled and bare.endswith("."))
        words.append(TextWord(token.end(), weight, pause, _first_sounds(chars)))
    return words


def _first_sounds(chars: str) -> str | None:
    if chars[0] in SPOKEN_SYMBOLS:
        return None  # "@name": "at..."
    alnum = [c.lower() for c in chars if c.isalnum()]
    sounds = _FIRST_SOUNDS.get(alnum[0]) if alnum else None
    if sounds is not None and alnum[0] == "1" and len(alnum) > 1 and alnum[1] in _TEENS:
        sounds += _TEENS[alnum[1]]  # "12": twelve, "1999": nineteen...
    return sounds


def _weight(char: str) -> float:
    if char.isdigit():
        return DIGIT_WEIGHT
    if char.isalpha():
        return 1.0
    return SYMBOL_WEIGHT if char in SPOKEN_SYMBOLS else 0.0


def _is_sound(phoneme: str) -> bool:
    # Phonemes, stress and length marks are letters and modifiers; " ", punctuation and
    # Piper's "^", "$" and "_" are not.
    return unicodedata.category(phoneme[0])[0] in "LM"


def spoken_words(alignments: list[PhonemeTiming]) -> list[SpokenWord]:
    """The words in Piper's phonemes: runs of sounds between spaces and punctuation."""
    words: list[SpokenWord] = []
    run: list[PhonemeTiming] = []
    for item in [*alignments, None]:
        if item is not None and _is_sound(item.phoneme):
            run.append(item)
            continue
        if run:
            end = run[-1].start_sample + run[-1].num_samples
            phonemes = [t.phoneme for t in run if unicodedata.category(t.phoneme[0]) != "Lm"]
            first = phonemes[0][0] if phonemes else ""
            words.append(SpokenWord(run[0].start_sample, end, len(phonemes), False, first))
            run = []
        if item is not None and words and item.phoneme[0] in CLAUSE_ENDS + DASHES:
            words[-1] = replace(words[-1], pause_after=True)
    return words


def _running(values: list[float]) -> list[float]:
    """Running sums from 0, so that a group's total is two look-ups."""
    sums = [0.0]
    for value in values:
        sums.append(sums[-1] + value)
    return sums


def align(texts: list[TextWord], spoken: list[SpokenWord]) -> list[tuple[int, int]] | None:
    """The best grouping, as (text words, spoken words) per group in order; None when the
    two cannot be grouped at all (one side many times longer than the other).

    A group costs how far its two lengths disagree (log ratio), SHAPE_COST per word beyond
    one-to-one, PAUSE_COST per clause pause on one side only (at its end) or inside it,
    and FIRST_SOUND_COST when its text cannot begin with its first sound."""
    n, m = len(texts), len(spoken)
    text_weight = _running([w.weight for w in texts])
    spoken_weight = _running([w.weight for w in spoken])
    text_pauses = _running([w.pause_after for w in texts])
    spoken_pauses = _running([w.pause_after for w in spoken])

    def group_cost(i: int, j: int, a: int, b: int) -> float:
        t = text_weight[i + a] - text_weight[i]
        p = spoken_weight[j + b] - spoken_weight[j]
        cost = abs(math.log((p + 2) / (t + 2))) + SHAPE_COST * (a + b - 2)
        cost += PAUSE_COST * (texts[i + a - 1].pause_after != spoken[j + b - 1].pause_after)
        inner = (
            text_pauses[i + a - 1] - text_pauses[i] + spoken_pauses[j + b - 1] - spoken_pauses[j]
        )
        sounds = texts[i].first_sounds
        mismatch = sounds is not None and spoken[j].first not in sounds
        return cost + PAUSE_COST * inner + FIRST_SOUND_COST * mismatch

    best = [[math.inf] * (m + 1) for _ in range(n + 1)]
    step: dict[tuple[int, int], tuple[int, int]] = {}
    best[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if best[i][j] == math.inf:
                continue
            for a, b in SHAPES:
                if i + a > n or j + b > m:
                    continue
                cost = best[i][j] + group_cost(i, j, a, b)
                if cost < best[i + a][j + b]:
                    best[i + a][j + b] = cost
                    step[(i + a, j + b)] = (a, b)
    if best[n][m] == math.inf:
        return None
    groups: list[tuple[int, int]] = []
    i, j = n, m
    while (i, j) != (0, 0):
        a, b = step[(i, j)]
        groups.append((a, b))
        i, j = i - a, j - b
    return groups[::-1]


def _aligned_midpoints(texts: list[TextWord], spoken: list[SpokenWord]) -> list[float] | None:
    """Where half of each text word has sounded (samples), from the alignment."""
    groups = align(texts, spoken)
    if groups is None:
        return None
    midpoints: list[float] = []
    i = j = 0
    for a, b in groups:
        start, end = spoken[j].start, spoken[j + b - 1].end
        weights = [w.weight for w in texts[i : i + a]]
        total, before = sum(weights), 0.0
        for weight in weights:  # several text words in one spoken word: shared by length
            midpoints.append(start + (end - start) * (before + weight / 2) / total)
            before += weight
        i, j = i + a, j + b
    return midpoints


def speech_spans(pcm: bytes, sample_rate: int) -> list[tuple[int, int]]:
    """Where the chunk's PCM has speech (samples): silence at either end and pauses of
    PAUSE_MIN_S or more left out."""
    if not pcm:
        return []
    db = frame_loudness_db(pcm, sample_rate, round(1 / FRAME_S))
    frame = sample_rate * FRAME_S
    voiced = db >= max(float(db.max()) - VOICED_BELOW_PEAK_DB, SILENCE_FLOOR_DBFS)
    spans: list[tuple[int, int]] = []
    shortest_pause = round(PAUSE_MIN_S / FRAME_S)
    samples = len(pcm) // 2
    for n in np.flatnonzero(voiced):
        start, end = int(n * frame), min(samples, int((n + 1) * frame))
        if spans and start - spans[-1][1] < shortest_pause * frame:
            spans[-1] = (spans[-1][0], end)  # a short gap is part of the speech
        else:
            spans.append((start, end))
    return spans


def _share_played(spans: list[tuple[int, int]], played: int) -> float:
    total = sum(end - start for start, end in spans)
    done = sum(min(end, max(start, played)) - start for start, end in spans)
    return done / total if total else 0.0


def _proportional_midpoints(texts: list[TextWord]) -> list[float]:
    """Where half of each word has sounded, as a share of the speech (by length; each
    word also costs one for its onset and the gap after it)."""
    weights = [w.weight + 1 for w in texts]
    total, before, midpoints = sum(weights), 0.0, []
    for weight in weights:
        midpoints.append((before + weight / 2) / total)
        before += weight
    return midpoints


def _timings_fit(alignments: list[PhonemeTiming], pcm: bytes) -> bool:
    """Timings that tile the chunk's audio (one sentence of Piper's may come without)."""
    at = 0
    for item in alignments:
        if item.start_sample != at:
            return False
        at += item.num_samples
    return at > 0 and (not pcm or at == len(pcm) // 2)


def heard_words(
    text: str,
    alignments: list[PhonemeTiming],
    played_samples: int,
    sample_rate: int,
    pcm: bytes = b"",
) -> str:
    """The text up to and including the last word of which half had played when playback
    stopped `played_samples` into the chunk. Timings are used when they fit the audio,
    else the speech found in `pcm`; with neither, nothing can be placed and "" comes back
    (never more than was played)."""
    texts = text_words(text)
    if not texts or played_samples <= 0:
        return ""
    midpoints: list[float] | None = None
    played: float = played_samples
    if _timings_fit(alignments, pcm):
        spoken = spoken_words(alignments)
        midpoints = _aligned_midpoints(texts, spoken) if spoken else None
        if midpoints is None and spoken:  # ungroupable: the share of the words' sound
            spans = [(w.start, w.end) for w in spoken]
            midpoints, played = _proportional_midpoints(texts), _share_played(spans, played_samples)
    if midpoints is None:
        spans = speech_spans(pcm, sample_rate)
        if not spans:
            return ""
        midpoints, played = _proportional_midpoints(texts), _share_played(spans, played_samples)
    heard = sum(1 for midpoint in midpoints if midpoint <= played)
    if heard == len(texts):
        return text.strip()
    return text[: texts[heard - 1].end].strip() if heard else ""


def heard_in_chunk(chunk: TtsChunk, played_s: float) -> str:
    """heard_words for a tts.chunk of which `played_s` seconds were played."""
    return heard_words(
        chunk.text, chunk.alignments, round(played_s * chunk.sample_rate), chunk.sample_rate,
        chunk.pcm,
    )  # fmt: skip
