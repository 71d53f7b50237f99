"""Talking over the first reply of a session, before asr has measured its echo.

For its first second the echo gate assumes the echo may be as loud as the configured floor
(echo_coupling_db), and hides the start of the user's question under it. It used to learn
those hidden chunks as the character's echo: each raised the gate over the next, and the
character talked on over the whole question (benchmarks.barge_in: the first trial, when it
came less than ~0.92 s into the reply). Here the user is the bundled sample's first
question, the reply's level is the benchmark's (its first Piper sentence), and playback is
simulated: it goes quiet and says "paused" 20 ms after a hold, and its echo stops with it.
"""

import wave

import numpy as np
import pytest
import soxr

from contracts import PlaybackProgress
from services.asr.barge_in import BargeIn, BargeInEvent, Hold, InterruptTurn, Resume
from services.asr.endpointer import Endpointer, SpeechStarted
from services.asr.settings import AsrSettings
from services.asr.vad import make_vad
from services.audio_levels import loudest_dbfs
from services.capture.stage import SAMPLE_CONVERSATION
from services.tts.settings import TtsSettings
from services.tts.synthesizer import make_synthesizer
from tests.unit.test_barge_in import Clock

RATE = 16_000
CHUNK = RATE * 20 // 1000  # samples in 20 ms
REPLY = "Once upon a time, a small dragon lived at the top of a very tall mountain."
"""The benchmark's first reply sentence."""


@pytest.fixture(scope="module")
def question() -> tuple[np.ndarray, float]:
    """'Hello Marionette, how are you today?' (the sample, 0.5 to 2.5 s), and where its
    speech starts: its first 20 ms within 40 dB of its loudest, as the benchmark says."""
    with wave.open(str(SAMPLE_CONVERSATION)) as sample:
        pcm = np.frombuffer(sample.readframes(sample.getnframes()), dtype="<i2")
    audio = pcm[int(0.5 * RATE) : int(2.5 * RATE)].astype(np.float32) / 32768
    frames = audio[: len(audio) // CHUNK * CHUNK].reshape(-1, CHUNK)
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    return audio, float(np.argmax(db > db.max() - 40)) * 0.02


@pytest.fixture(scope="module")
def reply() -> tuple[np.ndarray, float]:
    """The reply at 16 kHz, and the level playback reports for it (its loudest 20 ms)."""
    speech = make_synthesizer(TtsSettings(variation=0)).synthesize(REPLY)
    audio = np.frombuffer(speech.pcm, dtype="<i2").astype(np.float32) / 32768
    level = loudest_dbfs(speech.pcm, speech.sample_rate)
    return soxr.resample(audio, speech.sample_rate, RATE).astype(np.float32), level


def progress(state: str, level: float | None, remaining_s: float | None) -> PlaybackProgress:
    return PlaybackProgress(
        session_id="s", turn_id="r1", seq=0, chunk_index=0, played_s=0.0,
        state=state, level_dbfs=level, remaining_s=remaining_s,
    )  # fmt: skip


def converse(
    reply: tuple[np.ndarray, float],
    user: list[tuple[float, np.ndarray]],
    *,
    echo_db: float | None = None,
    echo_delay_s: float = 0.0,
    seconds: float = 4.0,
) -> tuple[list[tuple[float, BargeInEvent]], BargeIn]:
    """The first reply of a session plays from 0 s; the user says each (at_s, audio) over
    it; with echo_db the microphone also hears the reply, that much quieter, echo_delay_s
    after it was played. Playback pauses 20 ms after a hold (its echo stops), goes on at a
    resume, ends at an interrupt. Returns each event with when (s), and the detector."""
    audio, level = reply
    clock = Clock()
    settings = AsrSettings()
    barge_in = BargeIn(settings, make_vad(settings), clock)
    barge_in.on_progress(progress("playing", level, len(audio) / RATE))
    rng = np.random.default_rng(1)
    played: list[np.ndarray] = []
    position, state, pause_due = 0, "playing", -1
    delay = round(echo_delay_s / 0.02)
    events = []
    for n in range(round(seconds / 0.02)):
        block = audio[position : position + CHUNK] if state == "playing" else np.zeros(0)
        position += len(block)
        played.append(np.pad(block, (0, CHUNK - len(block))))
        heard = rng.normal(0, 10 ** (-60 / 20), CHUNK).astype(np.float32)  # the noise floor
        if echo_db is not None and n >= delay:
            heard += played[n - delay] * 10 ** (echo_db / 20)
        for at_s, said in user:
            start = n * CHUNK - round(at_s * RATE)  # where in what they say this chunk is
            if -CHUNK < start < len(said):
                piece = said[max(0, start) : start + CHUNK]
                heard[max(0, -start) : max(0, -start) + len(piece)] += piece
        barge_in.is_speech((np.clip(heard, -1, 1) * 32767).astype("<i2").tobytes())
        clock.now += 0.02
        if n == pause_due:
            state = "paused"
            barge_in.on_progress(progress("paused", None, 0.0))
        for event in barge_in.drain():
            events.append((round((n + 1) * 0.02, 2), event))
            if isinstance(event, Hold):
                pause_due = n + 1
            elif isinstance(event, Resume):
                state = "playing"
                remaining = (len(audio) - position) / RATE
                barge_in.on_progress(progress("playing", level, remaining))
            else:
                state = "flushed"
                barge_in.on_progress(progress("flushed", None, None))
    return events, barge_in


@pytest.mark.parametrize("into_reply_s", [0.6, 0.8, 0.9])
def test_the_user_talking_over_the_first_reply_before_its_echo_is_measured_interrupts_it(
    reply: tuple[np.ndarray, float], question: tuple[np.ndarray, float], into_reply_s: float
) -> None:
    audio, onset_s = question
    events, barge_in = converse(reply, [(into_reply_s, audio)])
    assert [event for _, event in events] == [Hold("r1"), InterruptTurn("r1")]
    hold_at = events[0][0]
    # Under the floor the user is heard from their first loud 40 ms (100 ms in), not at once.
    assert hold_at - (into_reply_s + onset_s) <= 0.12
    assert barge_in.coupling_db() <= barge_in.settings.echo_coupling_db, (
        "the start of the question was learned as the character's echo"
    )


def test_a_cough_over_the_first_reply_is_not_learned_as_its_echo(
    reply: tuple[np.ndarray, float], question: tuple[np.ndarray, float]
) -> None:
    """Learned, the cough's 250 ms would make the gate deaf to the user for two seconds."""
    audio, onset_s = question
    cough = audio[int(onset_s * RATE) : int((onset_s + 0.25) * RATE)]
    events, _ = converse(reply, [(0.8, cough), (1.8, audio)])
    assert [event for _, event in events] == [
        Hold("r1"), Resume("r1"), Hold("r1"), InterruptTurn("r1"),
    ]  # fmt: skip
    assert events[2][0] - (1.8 + onset_s) <= 0.06, "the question paused it within 60 ms"


@pytest.mark.parametrize(
    ("echo_db", "echo_delay_s"),
    [(-6.0, 0.1), (-6.0, 0.7), (-3.0, 0.3), (-20.0, 0.7)],
    ids=["loud", "loud-and-late", "louder-within-the-grace", "late"],
)
def test_the_characters_own_echo_is_still_not_taken_for_the_user(
    reply: tuple[np.ndarray, float], echo_db: float, echo_delay_s: float
) -> None:
    """What the gate now waits to learn is still hidden by the floor meanwhile: an echo
    that comes late (a slow output) or loud pauses nothing and opens no turn."""
    events, barge_in = converse(reply, [], echo_db=echo_db, echo_delay_s=echo_delay_s)
    assert events == []
    audio, level = reply
    clock = Clock()
    barge_in = BargeIn(barge_in.settings, make_vad(barge_in.settings), clock)
    barge_in.on_progress(progress("playing", level, len(audio) / RATE))
    echo = np.concatenate([np.zeros(round(echo_delay_s * RATE), np.float32), audio])
    echo = echo * 10 ** (echo_db / 20) + np.random.default_rng(2).normal(0, 1e-3, len(echo))
    pcm = (np.clip(echo, -1, 1) * 32767).astype("<i2").tobytes()
    heard = Endpointer(barge_in.settings, barge_in).push(pcm, 0.0)
    assert not any(isinstance(e, SpeechStarted) for e in heard), "its echo opened a turn"
