"""The bench's spoken questions: synthesized with the bundled Piper voice, repeatably."""

from dataclasses import dataclass

import numpy as np
import soxr

from contracts.limits import AUDIO_SAMPLE_RATE

FRAME_S = 0.02
FRAME_BYTES = int(AUDIO_SAMPLE_RATE * FRAME_S) * 2
LEAD_IN_S = 0.3
SPEECH_LEVEL = 0.02
"""A sample this loud (of full scale) counts as speech, for the ground-truth end of speech."""

QUESTIONS = (
    "What is the capital of France?",
    "Tell me a fun fact about cats.",
    "How far away is the moon?",
    "What should I cook for dinner tonight?",
    "Can you recommend a good book?",
    "Why is the sky blue?",
    "What is your favourite colour?",
    "How do bees make honey?",
    "Who was the first person on the moon?",
    "Do you like playing video games?",
    "What is the tallest mountain in the world?",
    "Tell me a joke about robots.",
)


@dataclass(frozen=True)
class Utterance:
    text: str
    pcm: bytes  # 16 kHz mono s16le, with a short lead-in of silence
    speech_end_sample: int  # the last sample of speech, the end of speech the bench times

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / AUDIO_SAMPLE_RATE


def speech_end(samples: np.ndarray) -> int:
    loud = np.flatnonzero(np.abs(samples) >= SPEECH_LEVEL)
    return int(loud[-1]) if loud.size else 0


def synthesize(count: int) -> list[Utterance]:
    """`count` questions (cycling through QUESTIONS) spoken by the bundled Piper voice."""
    from piper import PiperVoice, SynthesisConfig

    from services.models.bundled import piper_voice_paths

    voice = PiperVoice.load(*piper_voice_paths("joe-us"))
    repeatable = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    made: dict[str, Utterance] = {}
    for text in QUESTIONS[: min(count, len(QUESTIONS))]:
        chunks = list(voice.synthesize(text, repeatable))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        audio = soxr.resample(audio, chunks[0].sample_rate, AUDIO_SAMPLE_RATE)
        lead_in = np.zeros(int(LEAD_IN_S * AUDIO_SAMPLE_RATE), dtype=np.float32)
        samples = np.concatenate([lead_in, audio.astype(np.float32)])
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        made[text] = Utterance(text, pcm, speech_end(samples))
    return [made[QUESTIONS[i % len(QUESTIONS)]] for i in range(count)]
