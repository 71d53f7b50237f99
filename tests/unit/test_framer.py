"""Capture's conversion: any rate and channel count to 16 kHz mono 20 ms frames."""

import numpy as np
import pytest

from services.capture.framer import Framer


def tone(rate: int, seconds: float, hz: float, channels: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * hz * t).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


@pytest.mark.parametrize(("rate", "channels"), [(44_100, 2), (48_000, 1), (16_000, 1), (8_000, 2)])
def test_any_input_becomes_16k_mono_frames_of_the_same_sound(rate: int, channels: int) -> None:
    framer = Framer(rate, frame_ms=20)
    audio = tone(rate, 1.0, 440.0, channels)
    frames: list[bytes] = []
    for start in range(0, len(audio), 1000):  # blocks of an odd size, as a device gives them
        frames += framer.push(audio[start : start + 1000])
    frames += framer.push(np.zeros((0, channels), dtype=np.float32), last=True)
    assert all(len(f) == 640 for f in frames)
    assert len(frames) == 50  # one second of 20 ms frames
    samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float32)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * 16_000 / len(samples)
    assert abs(peak_hz - 440) < 5, "the pitch survives resampling"
    assert 0.4 < np.max(np.abs(samples)) / 32767 < 0.6, "and so does the level"
