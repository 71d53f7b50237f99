"""Loudness of s16le PCM in dBFS, shared by the stages that listen to levels."""

import numpy as np

SILENCE_DBFS = -120.0


def level_dbfs(pcm: bytes) -> float:
    """RMS level of the whole buffer."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if not len(samples):
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(samples**2)))
    return max(SILENCE_DBFS, float(20 * np.log10(max(rms, 1e-6))))


def frame_loudness_db(pcm: bytes, sample_rate: int, fps: int) -> np.ndarray:
    """RMS level of each 1/fps s window."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    per_frame = sample_rate / fps
    frames = int(np.ceil(len(samples) / per_frame))
    db = np.full(frames, SILENCE_DBFS, dtype=np.float32)
    for n in range(frames):
        window = samples[int(n * per_frame) : int((n + 1) * per_frame)]
        if len(window):
            rms = float(np.sqrt(np.mean(window**2)))
            db[n] = 20 * np.log10(max(rms, 1e-6))
    return db


def loudest_dbfs(pcm: bytes, sample_rate: int) -> float:
    """The loudest 20 ms of the buffer."""
    if not pcm:
        return SILENCE_DBFS
    return float(frame_loudness_db(pcm, sample_rate, 50).max())
