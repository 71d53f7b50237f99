"""faster-whisper tiny.en (bundled) on real speech: the short window hears what the 30 s
window hears, and Whisper's loops are undone."""

import pytest

import services.asr.recognizer as recognizer_module
from services.asr.recognizer import FasterWhisperRecognizer, without_loops
from services.asr.settings import AsrSettings
from services.bench.utterances import synthesize
from tests.helpers import word_error_rate

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def recognizer() -> FasterWhisperRecognizer:
    return FasterWhisperRecognizer(AsrSettings(short_window=True))


def test_the_short_window_hears_the_same_words_as_the_full_one(
    recognizer: FasterWhisperRecognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spoken = synthesize(6)
    tail = bytes(3200)  # the 100 ms asr keeps after the last voiced chunk
    short = [recognizer.transcribe(u.pcm + tail).text for u in spoken]
    monkeypatch.setattr(recognizer_module, "SHORT_WINDOW_S", 0.0)  # every clip: the long path
    full = [recognizer.transcribe(u.pcm + tail).text for u in spoken]
    for utterance, heard_short, heard_full in zip(spoken, short, full, strict=True):
        assert word_error_rate(utterance.text, heard_short) <= 0.2, (utterance.text, heard_short)
        assert word_error_rate(heard_full, heard_short) <= 0.2, (heard_full, heard_short)
    questions = [u.text for u in spoken if u.text.endswith("?")]
    asked = [h for u, h in zip(spoken, short, strict=True) if u.text in questions]
    assert sum(h.endswith("?") for h in asked) >= len(asked) - 1, "questions keep their '?'"


def test_silence_and_noise_are_no_words(recognizer: FasterWhisperRecognizer) -> None:
    import numpy as np

    noise = np.random.default_rng(1).normal(0, 300, 32_000).astype("<i2").tobytes()
    assert recognizer.transcribe(bytes(64_000)).text == ""
    assert recognizer.transcribe(noise).text == ""


@pytest.mark.parametrize(
    ("decoded", "kept"),
    [
        ("Goodbye. Goodbye. Goodbye.", "Goodbye."),
        ("The number is not answering. The", "The number is not answering."),
        ("Is it raining? Is it raining?", "Is it raining?"),
        ("Hello. How are you?", "Hello. How are you?"),
        ("I said hi. Hi.", "I said hi. Hi."),
        ("No. No, no.", "No. No, no."),
    ],
)
def test_whispers_loops_are_undone_and_real_repeats_kept(decoded: str, kept: str) -> None:
    assert without_loops(decoded) == kept
