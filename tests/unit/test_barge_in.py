"""The echo gate and barge-in detector, on real speech: the sample's voice over Piper's.

The character's reply is real Piper audio; "echo" is that audio at the microphone, quieter
by a room's coupling, with a little noise. The user is the bundled sample's first question.
"""

import wave
from collections.abc import Iterator

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

RATE = 16_000
CHUNK = RATE * 20 // 1000  # samples in 20 ms
REPLY = "Well, that is a long story about a dragon who lived in the mountains and sang."


@pytest.fixture(scope="module")
def user_question() -> np.ndarray:
    """'Hello Marionette, how are you today?' from the bundled sample (0.5 to 2.5 s)."""
    with wave.open(str(SAMPLE_CONVERSATION)) as sample:
        audio = np.frombuffer(sample.readframes(sample.getnframes()), dtype="<i2")
    return audio[int(0.5 * RATE) : int(2.5 * RATE)].astype(np.float32) / 32768


@pytest.fixture(scope="module")
def reply() -> tuple[np.ndarray, float]:
    """The character's reply at 16 kHz, and the level playback reports for it."""
    speech = make_synthesizer(TtsSettings()).synthesize(REPLY)
    level = loudest_dbfs(speech.pcm, speech.sample_rate)
    audio = np.frombuffer(speech.pcm, dtype="<i2").astype(np.float32) / 32768
    return soxr.resample(audio, speech.sample_rate, RATE).astype(np.float32), level


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def detector(clock: Clock, **overrides: object) -> BargeIn:
    settings = AsrSettings(**overrides)  # type: ignore[arg-type]
    return BargeIn(settings, make_vad(settings), clock)


def playing(
    level: float | None, turn: str = "r1", state: str = "playing", remaining_s: float | None = None
) -> PlaybackProgress:
    return PlaybackProgress(
        session_id="s", turn_id=turn, seq=0, chunk_index=0, played_s=0.0,
        state=state, level_dbfs=level, remaining_s=remaining_s,  # type: ignore[arg-type]
    )  # fmt: skip


def mic(*parts: np.ndarray, seconds: float) -> np.ndarray:
    """What the microphone hears: the parts mixed, over a quiet noise floor."""
    noise = np.random.default_rng(1).normal(0, 10 ** (-60 / 20), int(seconds * RATE))
    mixed = noise.astype(np.float32)
    for part in parts:
        mixed[: len(part)] += part[: len(mixed)]
    return mixed


def at(offset_s: float, audio: np.ndarray, gain_db: float = 0.0) -> np.ndarray:
    return np.concatenate(
        [np.zeros(int(offset_s * RATE), np.float32), audio * 10 ** (gain_db / 20)]
    )


def chunks(audio: np.ndarray) -> Iterator[bytes]:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    for start in range(0, len(pcm) - 2 * CHUNK + 1, 2 * CHUNK):
        yield pcm[start : start + 2 * CHUNK]


def listen(barge_in: BargeIn, clock: Clock, audio: np.ndarray) -> list[tuple[float, BargeInEvent]]:
    """Each event with when it came, in seconds of audio."""
    events = []
    for n, chunk in enumerate(chunks(audio)):
        barge_in.is_speech(chunk)
        clock.now += 0.02
        events += [(round((n + 1) * 0.02, 2), event) for event in barge_in.drain()]
    return events


def speech_onset_s(audio: np.ndarray, offset_s: float) -> float:
    """Where the user's speech starts: its first 20 ms within 40 dB of its loudest."""
    frames = audio[: len(audio) // CHUNK * CHUNK].reshape(-1, CHUNK)
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    return offset_s + float(np.argmax(db > db.max() - 40)) * 0.02


def test_talking_over_the_character_pauses_it_at_once_then_interrupts(
    user_question: np.ndarray,
) -> None:
    clock = Clock()
    barge_in = detector(clock)
    barge_in.on_progress(playing(-8.0))
    events = listen(barge_in, clock, mic(at(1.5, user_question), seconds=4.0))
    (hold_at, hold), (interrupt_at, interrupt) = events
    onset = speech_onset_s(user_question, 1.5)
    assert (hold, interrupt) == (Hold("r1"), InterruptTurn("r1"))
    assert 0 < hold_at - onset <= 0.1, "the character should go quiet within 100 ms"
    # 500 ms of speech in all, the 40 ms that paused it included.
    assert interrupt_at - hold_at >= 0.45, "a turn is interrupted only after 500 ms of speech"


def test_a_short_sound_pauses_the_character_and_lets_it_go_on(
    user_question: np.ndarray,
) -> None:
    clock = Clock()
    barge_in = detector(clock)
    barge_in.on_progress(playing(-8.0))
    onset = speech_onset_s(user_question, 0)
    cough = user_question[int(onset * RATE) : int((onset + 0.25) * RATE)]
    events = listen(barge_in, clock, mic(at(1.0, cough), seconds=3.0))
    assert [event for _, event in events] == [Hold("r1"), Resume("r1")]


def test_speech_while_the_character_is_silent_is_no_barge_in(user_question: np.ndarray) -> None:
    clock = Clock()
    barge_in = detector(clock)
    assert listen(barge_in, clock, mic(at(0.5, user_question), seconds=3.0)) == []
    barge_in.on_progress(playing(-8.0, state="finished"))
    clock.now += 1.0  # past the echo tail
    assert listen(barge_in, clock, mic(at(0.5, user_question), seconds=3.0)) == []


def test_the_characters_own_voice_fed_back_is_neither_barge_in_nor_speech(
    reply: tuple[np.ndarray, float],
) -> None:
    audio, level = reply
    echo = mic(at(0.05, audio, gain_db=-6), seconds=len(audio) / RATE + 0.5)
    clock = Clock()
    barge_in = detector(clock)
    endpointer = Endpointer(barge_in.settings, barge_in)
    barge_in.on_progress(playing(level))
    events = listen(barge_in, clock, echo)
    assert events == []
    clock.now = 100.0
    heard = endpointer.push(b"".join(chunks(echo)), 0.0)
    assert not any(isinstance(e, SpeechStarted) for e in heard), "its echo opened a turn"

    # The same echo, when playback does not say how loud it is, is taken for the user.
    unprotected = detector(clock)
    unprotected.on_progress(playing(None))
    assert Hold("r1") in [event for _, event in listen(unprotected, clock, echo)]


def test_the_user_clearly_louder_than_the_echo_still_interrupts(
    reply: tuple[np.ndarray, float], user_question: np.ndarray
) -> None:
    audio, level = reply
    seconds = len(audio) / RATE
    heard = mic(at(0.05, audio, gain_db=-20), at(2.0, user_question), seconds=seconds)
    clock = Clock()
    barge_in = detector(clock)
    barge_in.on_progress(playing(level))
    events = [event for _, event in listen(barge_in, clock, heard)]
    assert events == [Hold("r1"), InterruptTurn("r1")]


def test_a_gap_between_chunks_is_not_taken_for_the_characters_echo(
    reply: tuple[np.ndarray, float],
) -> None:
    """The next chunk comes late (tts behind): the microphone hears only its noise floor
    after the chunk ends, though playback's last report still says playing. Learning the
    echo coupling from that quiet would let the next chunk's own echo through the gate."""
    audio, level = reply
    first, rest = audio[: RATE // 2], audio[RATE // 2 :]
    clock = Clock()
    barge_in = detector(clock)
    barge_in.on_progress(playing(level, remaining_s=0.5))
    quiet_gap = mic(at(0.0, first, gain_db=-6), seconds=3.5)  # 0.5 s of speech, 3 s of nothing
    assert listen(barge_in, clock, quiet_gap) == []
    assert barge_in.coupling_db() > -20, "the coupling is learned from the echo, not the gap"
    barge_in.on_progress(playing(level, remaining_s=len(rest) / RATE))
    echo = mic(at(0.0, rest, gain_db=-6), seconds=len(rest) / RATE)
    assert listen(barge_in, clock, echo) == [], "the next chunk's echo is still the character"


def test_a_slow_pause_does_not_let_the_character_go_on_over_the_user(
    user_question: np.ndarray,
) -> None:
    """Early in a reply (its echo not yet measured) the gate hides part of the user's
    speech. Playback takes 0.6 s to report the pause (a busy machine): until then, and for
    the echo tail after, what the gate hides is not quiet, so the user still interrupts."""
    clock = Clock()
    barge_in = detector(clock)
    barge_in.on_progress(playing(-8.0, remaining_s=3.0))
    pause_reported_at: float | None = None
    events: list[BargeInEvent] = []
    for chunk in chunks(mic(at(0.6, user_question, gain_db=4), seconds=4.0)):
        barge_in.is_speech(chunk)
        clock.now += 0.02
        for event in barge_in.drain():
            events.append(event)
            if isinstance(event, Hold):
                pause_reported_at = clock.now + 0.6
        if pause_reported_at is not None and clock.now >= pause_reported_at:
            barge_in.on_progress(playing(-8.0, state="paused", remaining_s=0.0))
            pause_reported_at = None
    assert events == [Hold("r1"), InterruptTurn("r1")]
