"""The bench's spoken questions: synthesized with the bundled Piper voice, repeatably.

Two of them pause in the middle, as people do: "Hi there." then a question 0.35 s later
(the pause sounds final, so a reply is prepared for "Hi there." and thrown away when the
user goes on: the bench counts it), and a hesitation ("um,") with 0.8 s of silence, which
must not end the turn.
"""

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
class Paused:
    """An utterance said in two parts with a pause between them."""

    before: str
    pause_s: float
    after: str

    @property
    def text(self) -> str:
        return f"{self.before} {self.after}"


PAUSED = (
    Paused("Hi there.", 0.35, "Can you tell me a joke?"),
    Paused("I was wondering, um,", 0.8, "what is your favourite movie?"),
)
SPOKEN: tuple[str | Paused, ...] = (
    *QUESTIONS[:5], PAUSED[0], *QUESTIONS[5:10], PAUSED[1], *QUESTIONS[10:]
)  # fmt: skip
"""What the bench says, in order (cycling): the questions, with the paused ones among them."""


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
    """The first `count` of SPOKEN (cycling) spoken by the bundled Piper voice."""
    from piper import PiperVoice, SynthesisConfig

    from services.models.bundled import piper_voice_paths

    voice = PiperVoice.load(*piper_voice_paths("joe-us"))
    repeatable = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    def spoken(text: str) -> np.ndarray:
        chunks = list(voice.synthesize(text, repeatable))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        return np.asarray(soxr.resample(audio, chunks[0].sample_rate, AUDIO_SAMPLE_RATE))

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * AUDIO_SAMPLE_RATE), dtype=np.float32)

    made: dict[str, Utterance] = {}
    for said in SPOKEN[: min(count, len(SPOKEN))]:
        if isinstance(said, Paused):
            parts = [spoken(said.before), silence(said.pause_s), spoken(said.after)]
        else:
            parts = [spoken(said)]
        samples = np.concatenate([silence(LEAD_IN_S), *parts]).astype(np.float32)
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        text = said.text if isinstance(said, Paused) else said
        made[text] = Utterance(text, pcm, speech_end(samples))
    return [made[_text(SPOKEN[i % len(SPOKEN)])] for i in range(count)]


def _text(said: str | Paused) -> str:
    return said.text if isinstance(said, Paused) else said
