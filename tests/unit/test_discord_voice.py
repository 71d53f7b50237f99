"""The character's voice for Discord: tts audio as 48 kHz stereo 20 ms frames that
discord.py's Opus encoder takes, and that decode back to the same sound."""

import numpy as np
import pytest
import soxr
from discord import opus

from services.discord.voice import FRAME_BYTES, SILENCE, SpeechSource, to_discord_pcm

RATE = 22_050


def tone(seconds: float, hz: float = 440.0, rate: int = RATE) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 12_000).astype("<i2").tobytes()


def sweep(seconds: float, rate: int = RATE) -> bytes:
    """200 Hz rising to 2 kHz: unlike a steady tone, it lines up with itself at one lag only."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * (200 * t + 900 * t**2)) * 12_000).astype("<i2").tobytes()


def drain(source: SpeechSource) -> list[bytes]:
    frames = []
    while source.queued():
        frames.append(source.read())
    return frames


def test_a_chunk_becomes_48k_stereo_20ms_frames() -> None:
    source = SpeechSource()
    queued = source.feed("t1", tone(0.5), RATE)
    frames = drain(source)
    assert queued == len(frames) == 25  # 0.5 s in 20 ms frames (the last one padded)
    assert all(len(frame) == FRAME_BYTES == 3840 for frame in frames)
    stereo = np.frombuffer(b"".join(frames), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(stereo[:, 0], stereo[:, 1])  # the same on both sides
    assert not source.is_opus()


def test_the_frames_encode_to_opus_and_decode_back_close_to_the_input() -> None:
    source = SpeechSource()
    source.feed("t1", sweep(1.0), RATE)
    encoder, decoder = opus.Encoder(), opus.Decoder()  # type: ignore[no-untyped-call]
    packets = [encoder.encode(frame, encoder.SAMPLES_PER_FRAME) for frame in drain(source)]
    assert len(packets) == 50
    assert all(0 < len(p) < FRAME_BYTES // 4 for p in packets)  # compressed, not raw PCM
    decoded = np.frombuffer(b"".join(decoder.decode(p, fec=False) for p in packets), dtype="<i2")
    left = decoded.reshape(-1, 2)[:, 0].astype(np.float64)
    expected = soxr.resample(np.frombuffer(sweep(1.0), dtype="<i2"), RATE, 48_000)
    expected = expected.astype(np.float64)
    # Opus delays the sound by a few ms: compare at the best lag, away from the edges.
    span = slice(4800, 40_000)
    lags = range(0, 960)
    scores = [np.corrcoef(left[lag:][span], expected[span])[0, 1] for lag in lags]
    best = int(np.argmax(scores))
    assert 250 <= best <= 400  # Opus's own look-ahead: 6.5 ms (312 samples)
    assert scores[best] > 0.98
    ratio = np.sqrt(np.mean(left[best:][span] ** 2) / np.mean(expected[span] ** 2))
    assert ratio == pytest.approx(1.0, abs=0.15)


def test_an_idle_source_pauses_the_player_once_and_speech_resumes_it() -> None:
    calls: list[str] = []
    source = SpeechSource(on_idle=lambda: calls.append("idle"),
                          on_speech=lambda: calls.append("speech"))  # fmt: skip
    assert source.read() == SILENCE  # nothing to say: one frame of silence, then paused
    assert source.read() == SILENCE
    assert calls == ["idle"]
    source.feed("t1", tone(0.1), RATE)
    assert calls == ["idle", "speech"]
    assert source.read() != SILENCE


def test_an_interrupt_flushes_only_its_turn() -> None:
    source = SpeechSource()
    source.feed("t1", tone(0.2), RATE)
    source.feed("t2", tone(0.1), RATE)
    assert source.flush("t1") == 10
    assert source.queued() == 5
    assert source.flush() == 5  # a panic: everything
    assert source.read() == SILENCE


def test_other_rates_and_empty_chunks() -> None:
    assert to_discord_pcm(b"", 16_000) == b""
    same = to_discord_pcm(tone(0.02, rate=48_000), 48_000)
    assert len(same) == FRAME_BYTES
