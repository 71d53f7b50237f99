"""How open the mouth is in each video frame, from phoneme timings or from loudness."""

import numpy as np

from contracts.tts import PhonemeTiming
from services.audio_levels import frame_loudness_db

# Open vowels open the mouth most; lips close for m, b, p. (IPA, as Piper's phonemes.)
_OPENNESS = {
    **dict.fromkeys("aɑæɐʌ", 1.0),  # noqa: RUF001
    **dict.fromkeys("eɛəɜɚoɔ", 0.75),
    **dict.fromkeys("iɪuʊy", 0.5),  # noqa: RUF001
    **dict.fromkeys("mbp", 0.0),
}
_CONSONANT = 0.3
_SILENT = set("^$_ ,.!?;:-\"'ˈˌ")


def _openness(phoneme: str) -> float:
    if not phoneme or phoneme[0] in _SILENT:
        return 0.0
    return _OPENNESS.get(phoneme[0], _CONSONANT)


def mouth_track(
    pcm: bytes,
    sample_rate: int,
    alignments: list[PhonemeTiming],
    *,
    fps: int,
    silence_db: float,
    smoothing: float,
) -> list[float]:
    """One value in 0..1 per video frame. Frames below silence_db are always 0."""
    loudness = frame_loudness_db(pcm, sample_rate, fps)
    frames = len(loudness)
    raw = np.zeros(frames, dtype=np.float32)
    if alignments:
        for item in alignments:
            start = item.start_sample / sample_rate * fps
            end = (item.start_sample + item.num_samples) / sample_rate * fps
            for n in range(int(start), min(frames, int(np.ceil(end)))):
                raw[n] = max(raw[n], _openness(item.phoneme))
    else:
        # No timings: louder is more open (a square root, so quiet speech still shows).
        peak = np.percentile(loudness, 95) if frames else 0.0
        raw = np.sqrt(np.clip((loudness - silence_db) / max(peak - silence_db, 1e-3), 0, 1))
    track = np.zeros(frames, dtype=np.float32)
    previous = 0.0
    for n in range(frames):
        previous = smoothing * previous + (1 - smoothing) * float(raw[n])
        track[n] = previous
    track[loudness < silence_db] = 0.0
    return [round(float(v), 3) for v in np.clip(track, 0.0, 1.0)]
