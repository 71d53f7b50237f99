"""The echo canceller (WebRTC AEC3) and the far end it is given (EchoReference).

Canceller: the far end is real speech (the bundled sample); its "echo" is that speech
through a synthetic room (exponentially decaying noise, 100 ms) and 60 ms late, as a
microphone would hear it; the user is another stretch of the same recording.
Reference: made-up but realistic tts.chunk and playback.progress messages, timed by hand.
"""

import sys
import wave
from datetime import UTC, datetime

import numpy as np
import pytest
import soxr

from contracts import PlaybackProgress, TtsChunk
from services.asr.echo_canceller import EchoCancellerMissing, WebRtcEchoCanceller
from services.asr.echo_reference import MAX_TURNS, EchoReference
from services.capture.stage import SAMPLE_CONVERSATION

RATE = 16_000
FRAME = RATE * 20 // 1000
T0 = 1_700_000_000.0  # a Unix time: reports and captures are timed in them


def power_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12))


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    with wave.open(str(SAMPLE_CONVERSATION)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(float)


@pytest.fixture(scope="module")
def question(sample: np.ndarray) -> np.ndarray:
    """The sample's first question (0.5 to 2.5 s): the user."""
    return sample[int(0.5 * RATE) : int(2.5 * RATE)]


@pytest.fixture(scope="module")
def talking(sample: np.ndarray) -> np.ndarray:
    """Its second question (4 to 6 s) said three times, with no pause: the character."""
    return np.tile(sample[4 * RATE : 6 * RATE], 3)


def room_echo(far: np.ndarray, delay_s: float = 0.06, gain: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(7)
    taps = int(0.1 * RATE)
    rir = rng.standard_normal(taps) * np.exp(-6.9 * np.arange(taps) / taps)
    rir *= gain / np.sqrt(np.sum(rir**2))
    delayed = np.concatenate([np.zeros(int(delay_s * RATE)), far])[: len(far)]
    return np.convolve(delayed, rir)[: len(far)]


def run(canceller: WebRtcEchoCanceller, near: np.ndarray, far: np.ndarray) -> np.ndarray:
    """Frame by frame, as asr would."""
    as16 = [np.clip(x, -32768, 32767).astype("<i2") for x in (near, far)]
    out = [
        canceller.cancel(as16[0][i : i + FRAME].tobytes(), as16[1][i : i + FRAME].tobytes())
        for i in range(0, len(near) // FRAME * FRAME, FRAME)
    ]
    return np.frombuffer(b"".join(out), dtype="<i2").astype(float)


def test_the_canceller_removes_a_rooms_echo(talking: np.ndarray) -> None:
    far = talking
    echo = room_echo(far)
    cleaned = run(WebRtcEchoCanceller(), echo, far)
    # After its first two seconds (it adapts), the echo is at least 20 dB down.
    later = slice(2 * RATE, len(cleaned))
    assert power_db(echo[later]) - power_db(cleaned[later]) >= 20


def test_the_users_speech_passes_through_over_the_echo(
    talking: np.ndarray, question: np.ndarray
) -> None:
    far = talking
    echo = room_echo(far, gain=1.0)
    user = np.zeros_like(far)
    talk = slice(4 * RATE, 6 * RATE)
    user[talk] = 0.5 * question
    before = slice(3 * RATE, 4 * RATE)
    assert power_db(echo[talk]) > power_db(user[talk])  # the echo is the louder at the mic
    cleaned = run(WebRtcEchoCanceller(), echo + user, far)
    # The user comes out at about their own level (AEC3's high-pass and double-talk
    # handling cost a little), and far above what is left of the echo before them.
    assert power_db(cleaned[talk]) >= power_db(user[talk]) - 5
    assert power_db(cleaned[talk]) - power_db(cleaned[before]) >= 20


def test_near_end_alone_is_left_alone(talking: np.ndarray) -> None:
    near = 0.5 * talking[: 3 * RATE]
    cleaned = run(WebRtcEchoCanceller(), near, np.zeros_like(near))
    assert abs(power_db(cleaned[RATE:]) - power_db(near[RATE:])) < 2


def test_frames_must_match_and_be_whole_blocks() -> None:
    canceller = WebRtcEchoCanceller()
    with pytest.raises(ValueError, match="far end"):
        canceller.cancel(bytes(640), bytes(320))
    with pytest.raises(ValueError, match="10 ms"):
        canceller.cancel(bytes(300), bytes(300))


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import fails
    with pytest.raises(EchoCancellerMissing, match="pip install 'pywebrtc-audio=="):
        WebRtcEchoCanceller()


# The far end: which audio sounds at a capture time.


def at(t: float) -> datetime:
    return datetime.fromtimestamp(T0 + t, UTC)


def chunk(
    index: int, samples: np.ndarray, made_s: float = 0.0, turn: str = "t1", rate: int = RATE
) -> TtsChunk:
    return TtsChunk(
        session_id="s", turn_id=turn, seq=index, index=index, text=f"part {index}",
        sample_rate=rate, pcm=samples.astype("<i2").tobytes(), created_at=at(made_s),
    )  # fmt: skip


def report(
    t: float, state: str, index: int = 0, remaining_s: float | None = None,
    played_s: float = 0.0, turn: str = "t1",
) -> PlaybackProgress:  # fmt: skip
    return PlaybackProgress(
        session_id="s", turn_id=turn, seq=0, chunk_index=index, played_s=played_s,
        state=state, remaining_s=remaining_s, created_at=at(t),
    )  # fmt: skip


def ramp(seconds: float, base: int = 1) -> np.ndarray:
    """Samples that say where they are: sample n is base + n (n < 30000)."""
    return base + np.arange(round(seconds * RATE))


def heard(reference: EchoReference, t: float, samples: int = FRAME) -> np.ndarray:
    return reference.far_end_samples(T0 + t, samples).astype(int)


def test_silence_before_anything_plays() -> None:
    reference = EchoReference()
    reference.add_chunk(chunk(0, ramp(1.0)))
    assert not heard(reference, 0.5).any()


def test_a_chunk_sounds_from_its_report_plus_the_output_delay() -> None:
    reference = EchoReference(output_delay_s=0.05)
    reference.add_chunk(chunk(0, ramp(1.0)))
    reference.on_progress(report(1.0, "playing", remaining_s=1.0))
    # Captured at 1.25 s: 0.2 s into the chunk (0.05 s of it still in the output buffer).
    assert list(heard(reference, 1.25)) == list(ramp(1.0)[3200 : 3200 + FRAME])
    # A frame across the start: silence, then the chunk's first samples.
    frame = heard(reference, 1.04)
    assert not frame[:160].any()
    assert list(frame[160:]) == list(ramp(1.0)[:160])


def test_a_report_mid_chunk_places_the_rest() -> None:
    reference = EchoReference()
    reference.add_chunk(chunk(0, ramp(1.0)))
    reference.on_progress(report(2.0, "playing", remaining_s=0.4))  # resumed 0.6 s in
    assert list(heard(reference, 2.1)) == list(ramp(1.0)[11200 : 11200 + FRAME])


def test_the_next_chunk_follows_back_to_back_or_when_it_was_made() -> None:
    reference = EchoReference()
    reference.add_chunk(chunk(0, ramp(0.5)))
    reference.add_chunk(chunk(1, ramp(0.5, base=20000), made_s=0.2))
    reference.add_chunk(chunk(2, ramp(0.5, base=10000), made_s=2.0))  # late: tts was slow
    reference.on_progress(report(1.0, "playing", remaining_s=0.5))
    # Chunk 0 ends at 1.5 s and chunk 1 (here long before) plays on without a report.
    frame = heard(reference, 1.49)
    assert list(frame[:160]) == list(ramp(0.5)[-160:])
    assert list(frame[160:]) == list(ramp(0.5, base=20000)[:160])
    # Chunk 1 ends at 2.0 s; chunk 2 was made at 2.0 s: it follows at once.
    assert heard(reference, 2.01)[0] == 10000 + 160
    # Made at 2.5 s instead, there is a gap.
    reference.add_chunk(chunk(2, ramp(0.5, base=10000), made_s=2.5))
    assert not heard(reference, 2.2).any()
    assert heard(reference, 2.5)[0] == 10000


def test_a_pause_silences_and_playing_again_resumes() -> None:
    reference = EchoReference()
    reference.add_chunk(chunk(0, ramp(1.0)))
    reference.on_progress(report(1.0, "playing", remaining_s=1.0))
    reference.on_progress(report(1.3, "paused", played_s=0.3))
    frame = heard(reference, 1.29)
    assert list(frame[:160]) == list(ramp(1.0)[4640:4800])
    assert not frame[160:].any()
    assert not heard(reference, 2.0).any()
    reference.on_progress(report(3.0, "playing", remaining_s=0.7, played_s=0.3))
    assert heard(reference, 3.0)[0] == 1 + 4800  # where it stopped


def test_flushed_is_silence_and_finished_lets_the_last_chunk_end() -> None:
    reference = EchoReference()
    reference.add_chunk(chunk(0, ramp(1.0)))
    reference.on_progress(report(1.0, "playing", remaining_s=1.0))
    reference.on_progress(report(1.95, "finished"))  # reported a little before it ends
    assert heard(reference, 1.96).all()
    assert not heard(reference, 2.0).any()
    reference.on_progress(report(1.5, "flushed"))
    assert not heard(reference, 1.6).any()


def test_a_report_before_its_chunk_sounds_once_the_chunk_comes() -> None:
    reference = EchoReference()
    reference.on_progress(report(1.0, "playing", remaining_s=1.0))
    assert not heard(reference, 1.1).any()
    assert reference.lacks_audio(T0 + 1.1)  # asr knows it cannot cancel this echo
    reference.add_chunk(chunk(0, ramp(1.0)))
    assert heard(reference, 1.1)[0] == 1 + 1600
    assert not reference.lacks_audio(T0 + 1.1)


def test_only_what_plays_can_lack_audio() -> None:
    reference = EchoReference()
    assert not reference.lacks_audio(T0 + 1.0)  # nothing reported
    reference.on_progress(report(1.0, "playing", remaining_s=1.0))
    reference.on_progress(report(1.5, "paused", played_s=0.5))
    assert reference.lacks_audio(T0 + 1.2)
    assert not reference.lacks_audio(T0 + 1.6)  # paused: nothing plays


def test_without_remaining_the_position_comes_from_played_s() -> None:
    reference = EchoReference()
    reference.add_chunk(chunk(0, ramp(0.5)))
    reference.add_chunk(chunk(1, ramp(1.0, base=5000)))
    reference.on_progress(report(4.0, "playing", index=1, played_s=0.75))  # 0.25 s into 1
    assert heard(reference, 4.0)[0] == 5000 + 4000


def test_tts_audio_is_resampled_to_16_khz() -> None:
    rng = np.random.default_rng(3)
    piper = (rng.standard_normal(22050) * 3000).astype(np.int16)  # 1 s at Piper's rate
    reference = EchoReference()
    reference.add_chunk(chunk(0, piper, rate=22050))
    reference.on_progress(report(1.0, "playing", remaining_s=1.0))
    expected = soxr.resample(piper, 22050, RATE)
    assert list(heard(reference, 1.5)) == list(expected[8000 : 8000 + FRAME])


def test_old_turns_are_let_go() -> None:
    reference = EchoReference()
    for n in range(MAX_TURNS + 1):
        reference.add_chunk(chunk(0, ramp(1.0), turn=f"t{n}"))
    reference.on_progress(report(1.0, "playing", remaining_s=1.0, turn="t0"))
    assert not heard(reference, 1.5).any()  # its audio is gone
    reference.on_progress(report(2.0, "playing", remaining_s=1.0, turn=f"t{MAX_TURNS}"))
    assert heard(reference, 2.5).any()
