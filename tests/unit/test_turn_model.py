"""End of turn (services.asr.turn_model): the features Smart Turn is fed, TurnJudge's rules,
and the real model on real audio from the bundled Piper voice.

Accuracy on a labelled set, real human speech included, is measured by
`python -m benchmarks.end_of_turn`, not here.
"""

import numpy as np
import pytest
import soxr
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

from contracts.limits import AUDIO_SAMPLE_RATE
from services.asr.turn_model import WINDOW_S, SmartTurn, TurnJudge, log_mel_features
from services.models.bundled import piper_voice_paths, smart_turn_model_path

WINDOW = WINDOW_S * AUDIO_SAMPLE_RATE


def voiced(seconds: float) -> np.ndarray:
    """A vowel-like tone, syllable-rate loudness and a little noise: a spectrum with
    structure in every mel band, and quiet stretches."""
    t = np.arange(int(seconds * AUDIO_SAMPLE_RATE)) / AUDIO_SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 700, 1200), 1))
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None)
    noise = np.random.default_rng(7).standard_normal(t.size)
    return (0.2 * tone * envelope + 0.01 * noise).astype(np.float32)


@pytest.mark.parametrize("seconds", [0.6, 3.0, 8.0, 11.5])
def test_features_match_pipecats_on_the_padded_window(seconds: float) -> None:
    samples = voiced(seconds)
    # pipecat keeps the last 8 s and pads the front with zeros, then computes features
    window = samples[-WINDOW:]
    padded = np.pad(window, (WINDOW - window.size, 0))
    expected = compute_whisper_log_mel_features(padded)
    ours = log_mel_features(samples)
    assert ours.shape == expected.shape == (80, 800)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_features_of_the_same_audio_in_int16_steps_still_match() -> None:
    """asr feeds s16le: values on a 1/32768 grid, as SmartTurn.probability makes them."""
    pcm = (voiced(2.0) * 32767).astype(np.int16)
    samples = pcm.astype(np.float32) / 32768.0
    expected = compute_whisper_log_mel_features(np.pad(samples, (WINDOW - samples.size, 0)))
    np.testing.assert_allclose(log_mel_features(samples), expected, atol=1e-4)


JUDGE = TurnJudge()


@pytest.mark.parametrize(
    "text", ["I was thinking about going to the", "Can you tell me, because", "Um, so", "and"]
)
def test_a_trailing_word_means_not_finished_however_sure_the_model(text: str) -> None:
    verdict = JUDGE.judge(0.99, text)
    assert not verdict.complete
    assert "ends on" in verdict.reason


@pytest.mark.parametrize("text", ["So what I want to know is...", "Well, I guess…", "Because,"])
def test_words_that_trail_off_mean_not_finished(text: str) -> None:
    assert not JUDGE.judge(0.99, text).complete


def test_an_unsure_model_and_a_finished_question_make_a_finished_turn() -> None:
    verdict = JUDGE.judge(0.3, "What game are you playing tonight?")
    assert verdict.complete
    assert verdict.probability == 0.3


def test_below_the_lean_even_a_question_mark_is_not_enough() -> None:
    assert not JUDGE.judge(0.01, "What game are you playing tonight?").complete


def test_an_unsure_model_without_an_ending_is_not_finished() -> None:
    assert not JUDGE.judge(0.3, "I love this song").complete
    assert not JUDGE.judge(0.3, None).complete


def test_a_sure_model_is_a_finished_turn_with_or_without_words() -> None:
    assert JUDGE.judge(0.8, "I love this song").complete
    assert JUDGE.judge(0.8, None).complete
    assert JUDGE.judge(0.5, "").complete  # the threshold itself counts


def piper_pcm(text: str) -> bytes:
    """The bundled voice, without its random variation, as asr would hand it over at the
    pause: a lead-in, the speech, 0.2 s of silence."""
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(*piper_voice_paths("joe-us"))
    chunks = list(voice.synthesize(text, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    audio = np.concatenate([c.audio_float_array for c in chunks])
    audio = soxr.resample(audio, chunks[0].sample_rate, AUDIO_SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(audio) >= 0.01)
    lead, pause = np.zeros(int(0.3 * AUDIO_SAMPLE_RATE)), np.zeros(int(0.2 * AUDIO_SAMPLE_RATE))
    samples = np.concatenate([lead, audio[: loud[-1] + 1], pause])
    return bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def test_the_real_model_hears_a_finished_question_and_a_sentence_cut_after_because() -> None:
    model = SmartTurn(smart_turn_model_path())
    finished = model.probability(piper_pcm("What is the capital of France?"))
    cut = model.probability(piper_pcm("Can you tell me, because"))
    assert 0.0 <= cut <= 1.0
    assert 0.0 <= finished <= 1.0
    assert finished >= JUDGE.threshold > cut
    assert finished - cut > 0.5
