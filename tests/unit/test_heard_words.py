"""services.playback.heard: what the user heard of a chunk cut short, from real Piper output.

Each sentence is synthesized once (the bundled voice, no variation, so the audio repeats),
normalized as the tts stage does; where a word lies is found in Piper's own phonemes here,
independently of the code under test, and playback is stopped inside it."""

# Piper's IPA, with letters that look like Latin ones, is what these tests are about.
# ruff: noqa: RUF001

from functools import cache

import pytest

from contracts.tts import PhonemeTiming, TtsChunk
from services.playback.heard import heard_in_chunk, heard_words, text_words
from services.tts.normalize import normalize_for_speech
from services.tts.settings import TtsSettings
from services.tts.synthesizer import PiperSynthesizer, Speech


@cache
def piper() -> PiperSynthesizer:
    return PiperSynthesizer(TtsSettings(variation=0.0))


@cache
def speech(text: str) -> Speech:
    return piper().synthesize(normalize_for_speech(text))


def span(text: str, ipa: str, nth: int = 0) -> tuple[int, int]:
    """Where the phonemes `ipa` (the nth time they occur) sound in the text's speech."""
    timings = speech(text).alignments
    joined, owner = "", []
    for k, item in enumerate(timings):
        joined += item.phoneme
        owner += [k] * len(item.phoneme)
    at = -1
    for _ in range(nth + 1):
        at = joined.index(ipa, at + 1)
    first, last = timings[owner[at]], timings[owner[at + len(ipa) - 1]]
    return first.start_sample, last.start_sample + last.num_samples


def stop_at(text: str, ipa: str, share: float, nth: int = 0) -> str:
    """What was heard when playback stopped `share` of the way through the phonemes."""
    start, end = span(text, ipa, nth)
    said = speech(text)
    played = start + round((end - start) * share)
    return heard_words(text, said.alignments, played, said.sample_rate, said.pcm)


def phonemes(text: str) -> str:
    return "".join(item.phoneme for item in speech(text).alignments)


def test_piper_marks_words_with_spaces_and_keeps_punctuation_and_sentences() -> None:
    # What the rest relies on, as the bundled voice says it.
    assert phonemes("Hello there, I'm Dr. Smith.") == "^həlˈoʊ ðˈɛɹ, aɪm dˈɑːktɚ smˈɪθ.$"
    assert phonemes("I'm here. You're there.") == "^aɪm hˈɪɹ.$^jʊɹ ðˈɛɹ.$"
    # The normalizer reads the number out; espeak glues an ellipsis and "on the".
    assert "θɹˈiː hˈʌndɹɪd ænd ˈeɪɾi θˈaʊzənd" in phonemes("It costs 380,000 dollars!")
    assert phonemes("Wait... what?") == "^wˈeɪtwˌʌt?$"
    assert "ɡˌoʊ ɔnðə tɹˈɪp" in phonemes("We should go on the trip.")


@pytest.mark.parametrize(
    ("ipa", "before_half", "after_half"),
    [
        ("həlˈoʊ", "", "Hello"),
        ("ðˈɛɹ", "Hello", "Hello there,"),
        ("aɪm", "Hello there,", "Hello there, I'm"),
        ("dˈɑːktɚ", "Hello there, I'm", "Hello there, I'm Dr."),
        ("smˈɪθ", "Hello there, I'm Dr.", "Hello there, I'm Dr. Smith."),
    ],
)
def test_a_word_is_heard_once_half_of_it_has_played(
    ipa: str, before_half: str, after_half: str
) -> None:
    text = "Hello there, I'm Dr. Smith."
    assert stop_at(text, ipa, 0.4) == before_half
    assert stop_at(text, ipa, 0.6) == after_half


def test_nothing_before_the_first_word_and_everything_at_the_end() -> None:
    text = "Hello there, I'm Dr. Smith."
    said = speech(text)
    first_word = span(text, "həlˈoʊ")[0]
    assert first_word > 0, "Piper starts with a little silence"
    for played in (0, first_word // 2, first_word):
        assert heard_words(text, said.alignments, played, said.sample_rate, said.pcm) == ""
    total = len(said.pcm) // 2
    for played in (total, total + 10_000):
        assert heard_words(text, said.alignments, played, said.sample_rate, said.pcm) == text


def test_a_number_read_as_five_words_is_heard_once_half_of_them_have_played() -> None:
    text = "It costs 380,000 dollars!"
    assert stop_at(text, "hˈʌndɹɪd", 0.9) == "It costs", "three hundred: not yet the number"
    assert stop_at(text, "θˈaʊzənd", 0.2) == "It costs 380,000"
    assert stop_at(text, "dˈɑːlɚz", 0.3) == "It costs 380,000"
    assert stop_at(text, "dˈɑːlɚz", 0.7) == "It costs 380,000 dollars!"


def test_words_espeak_glues_together_share_their_sound() -> None:
    text = "We should go on the trip."
    assert stop_at(text, "ɔnðə", 0.05) == "We should go"
    assert stop_at(text, "ɔnðə", 1.0) == "We should go on the"
    assert stop_at(text, "tɹˈɪp", 0.6) == text
    ellipsis = "Wait... what? Really."
    assert stop_at(ellipsis, "wˈeɪtwˌʌt", 0.1) == ""
    assert stop_at(ellipsis, "wˈeɪtwˌʌt", 1.0) == "Wait... what?"
    assert stop_at(ellipsis, "ɹˈiəli", 0.3) == "Wait... what?"


def test_abbreviations_and_a_second_sentence_in_the_chunk() -> None:
    text = "The U.S.A. is big, e.g. Texas. I'm here."
    assert stop_at(text, "jˈuː", 0.5) == "The", "U.S.A. is three letter names"
    assert stop_at(text, "ɐ ɪz", 0.0) == "The U.S.A."
    assert stop_at(text, "ɛɡzˈæmpəl", 0.9) == "The U.S.A. is big, e.g."
    assert stop_at(text, "hˈɪɹ", 0.6) == text
    assert stop_at(text, "aɪm", 0.7) == "The U.S.A. is big, e.g. Texas. I'm"


def test_what_was_heard_only_grows_and_is_always_the_start_of_the_text() -> None:
    for text in [
        "Thanks for the 500 bits, @CoolGamer42! You're awesome, seriously.",
        "We're at 1,234 followers, about 12.5% more than last week. Let's hit 2k by Friday!",
        "My favorite foods are pizza, sushi, and ice cream — in that order.",
    ]:
        said = speech(text)
        total = len(said.pcm) // 2
        heard = [
            heard_words(text, said.alignments, played, said.sample_rate, said.pcm)
            for played in range(0, total + 1, total // 60)
        ]
        counts = [len(text_words(h)) for h in heard]
        assert counts == sorted(counts)
        assert all(text.startswith(h) for h in heard)
        assert heard[0] == ""
        assert counts[-1] == len(text_words(text))


def test_without_timings_the_share_of_the_speech_is_counted_not_the_silence() -> None:
    text = "So, to be honest, I think we should go on the trip in the spring of next year."
    said = speech(text)
    silence = b"\x00\x00" * said.sample_rate  # a second before and after the speech
    padded = silence + said.pcm + silence
    for ipa, share in [("θˈɪŋk", 0.5), ("tɹˈɪp", 0.5), ("spɹˈɪŋ", 0.9)]:
        start, end = span(text, ipa)
        played = start + round((end - start) * share)
        timed = heard_words(text, said.alignments, played, said.sample_rate, said.pcm)
        untimed = heard_words(text, [], played + said.sample_rate, said.sample_rate, padded)
        assert abs(len(text_words(untimed)) - len(text_words(timed))) <= 1, (timed, untimed)
    # Inside the leading second of silence nothing was heard (a plain share of the chunk
    # would already give some words).
    assert heard_words(text, [], said.sample_rate * 9 // 10, said.sample_rate, padded) == ""
    end_of_speech = said.sample_rate + len(said.pcm) // 2
    assert heard_words(text, [], end_of_speech, said.sample_rate, padded) == text


def test_timings_that_do_not_cover_the_audio_are_not_trusted() -> None:
    # Piper gives no timings for a sentence it cannot align: what the synthesizer then
    # passes on covers less than the audio, and would place the words wrongly.
    text = "I'm here. You're there, aren't you?"
    said = speech(text)
    first_sentence = [t for t in said.alignments if t.start_sample < span(text, "$")[1]]
    played = span(text, "ðˈɛɹ")[1]
    from_pcm = heard_words(text, [], played, said.sample_rate, said.pcm)
    assert heard_words(text, first_sentence, played, said.sample_rate, said.pcm) == from_pcm
    assert len(text_words(from_pcm)) in (3, 4, 5)  # "I'm here. You're there," give or take


def test_a_grouping_that_cannot_be_made_falls_back_to_the_share_of_the_words() -> None:
    # Two text words against twenty spoken ones: no grouping takes 8+ words to one.
    long = "The quick brown fox jumps over the lazy dog while the cat sleeps on the windowsill."
    said = speech(long)
    start, end = span(long, "ðə", 0)[0], span(long, "wˈɪndoʊsˌɪl")[1]
    early, late = start + (end - start) // 10, start + (end - start) * 9 // 10
    assert heard_words("one two", said.alignments, early, said.sample_rate, said.pcm) == ""
    assert heard_words("one two", said.alignments, late, said.sample_rate, said.pcm) == "one two"
    middle = start + (end - start) // 2
    assert heard_words("one two", said.alignments, middle, said.sample_rate, said.pcm) == "one"


def test_with_neither_timings_nor_audio_nothing_is_claimed() -> None:
    assert heard_words("Hello there.", [], 10_000, 22_050) == ""
    assert (
        heard_words("", [PhonemeTiming(phoneme="a", start_sample=0, num_samples=9)], 9, 22_050)
        == ""
    )


def test_heard_in_chunk_reads_the_chunk_and_seconds_played() -> None:
    text = "Hello there, I'm Dr. Smith."
    said = speech(text)
    chunk = TtsChunk(
        session_id="s", turn_id="t", seq=0, index=0, text=text, sample_rate=said.sample_rate,
        pcm=said.pcm, alignments=said.alignments,
    )  # fmt: skip
    start, end = span(text, "aɪm")
    assert heard_in_chunk(chunk, (start + 0.7 * (end - start)) / said.sample_rate) == (
        "Hello there, I'm"
    )
    assert heard_in_chunk(chunk, 0.0) == ""
