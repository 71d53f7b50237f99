"""When asr uses the echo canceller's output: only while the microphone hears the
character (speakers), never with headphones, after the character has been quiet, or
when the reference lacks the audio that plays."""

from datetime import UTC, datetime

import numpy as np

from contracts import PlaybackProgress, TtsChunk
from services.asr.echo_canceller import WebRtcEchoCanceller
from services.asr.echo_path import EchoPath
from services.asr.echo_reference import EchoReference

RATE = 16_000
FRAME = 320  # samples in 20 ms
T0 = 1_760_000_000.0


def voice(seconds: float, seed: int = 1) -> np.ndarray:
    """Something broadband and loud, like speech (-15 dBFS or so): noise through a
    syllable-rate envelope. Another seed is another voice."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    shaped: np.ndarray = np.convolve(rng.normal(0, 0.25, len(t)), np.ones(4) / 4, "same")
    return shaped * envelope


def playing(
    reply: np.ndarray, turn: str = "r1", index: int = 0
) -> tuple[TtsChunk, PlaybackProgress]:
    pcm = (reply * 32767).astype("<i2").tobytes()
    chunk = TtsChunk(
        session_id="s", turn_id=turn, seq=index, index=index, final=True, text="reply",
        sample_rate=RATE, pcm=pcm, created_at=datetime.fromtimestamp(T0 - 0.5, UTC),
    )  # fmt: skip
    progress = PlaybackProgress(
        session_id="s", turn_id=turn, seq=0, chunk_index=index, played_s=0.0,
        state="playing", remaining_s=len(reply) / RATE,
        created_at=datetime.fromtimestamp(T0, UTC),
    )  # fmt: skip
    return chunk, progress


def path(with_chunk: bool = True) -> tuple[EchoPath, np.ndarray]:
    reply = voice(3.0)
    chunk, progress = playing(reply)
    reference = EchoReference()
    if with_chunk:
        reference.add_chunk(chunk)
    reference.on_progress(progress)
    return EchoPath(reference, WebRtcEchoCanceller(), echo_tail_s=0.3), reply


def feed(echo: EchoPath, mic: np.ndarray, start_s: float = 0.0) -> list[tuple[bytes, bytes, bool]]:
    """(what went in, what came out, cancelled) per frame."""
    out = []
    pcm = (np.clip(mic, -1, 1) * 32767).astype("<i2")
    for n in range(len(pcm) // FRAME):
        frame = pcm[n * FRAME : (n + 1) * FRAME].tobytes()
        heard, cancelled = echo.process(frame, T0 + start_s + n * 0.02)
        out.append((frame, heard, cancelled))
    return out


def noise(seconds: float, dbfs: float = -65.0) -> np.ndarray:
    return np.random.default_rng(2).normal(0, 10 ** (dbfs / 20), int(seconds * RATE))


def test_with_headphones_the_user_is_heard_as_the_microphone_heard_them() -> None:
    echo, _ = path()
    frames = feed(echo, noise(2.0))
    assert not any(cancelled for _, _, cancelled in frames)
    assert all(heard == sent for sent, heard, _ in frames)


def test_with_speakers_the_canceller_takes_the_voice_out() -> None:
    echo, reply = path()
    delayed = np.concatenate([np.zeros(int(0.05 * RATE)), reply])[: len(reply)]
    mic = 0.5 * delayed + noise(3.0)
    frames = feed(echo, mic)
    assert all(cancelled for _, _, cancelled in frames[60:]), "on within 1.2 s of echo"
    late = frames[100:]  # after two seconds the canceller has converged
    raw = np.concatenate([np.frombuffer(sent, "<i2") for sent, _, _ in late]).astype(float)
    cleaned = np.concatenate([np.frombuffer(heard, "<i2") for _, heard, _ in late]).astype(float)
    removed_db = 10 * np.log10(np.mean(raw**2) / max(np.mean(cleaned**2), 1e-9))
    assert removed_db > 20


def test_after_the_character_is_quiet_the_microphone_is_heard_untouched() -> None:
    echo, reply = path()
    delayed = np.concatenate([np.zeros(int(0.05 * RATE)), reply])[: len(reply)]
    feed(echo, 0.5 * delayed + noise(3.0))
    later = feed(echo, voice(1.0, seed=9), start_s=4.0)  # the user, 1 s after the reply
    assert not any(cancelled for _, _, cancelled in later)
    assert all(heard == sent for sent, heard, _ in later)


def test_an_echo_the_reference_lacks_is_left_to_the_gate() -> None:
    echo, reply = path(with_chunk=False)  # taken over mid-reply: the audio never came
    frames = feed(echo, 0.5 * reply + noise(3.0))
    assert not any(cancelled for _, _, cancelled in frames)


def test_the_user_talking_over_the_character_is_no_echo() -> None:
    """Headphones: the user's voice over the playing character is loud at the microphone,
    but it does not follow what plays."""
    echo, _ = path()
    frames = feed(echo, voice(2.0, seed=9) + noise(2.0))
    assert not any(cancelled for _, _, cancelled in frames)


def test_a_reply_that_just_began_is_no_echo_at_a_quiet_microphone() -> None:
    """The far end's window half silence (the reply starts): lags under the silence must
    not pass the FFT's rounding off as a match."""
    echo, _ = path()
    feed(echo, noise(1.0), start_s=-1.0)  # a second before the reply: nothing plays
    frames = feed(echo, noise(2.0, dbfs=-60.0))
    assert not any(cancelled for _, _, cancelled in frames)
