"""The synthetic half of the set: the bundled Piper voice saying finished and unfinished
turns a streamer or a viewer might say.

Piper's noise (noise_scale, noise_w) varies its intonation and timing, so the turns are not
all said alike; its ONNX graph draws that noise from RandomNormalLike nodes with no seed,
so each utterance here runs in a session whose graph has a seed set (the utterance's
number): the same text, settings and seed give the same audio.
"""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from contracts.limits import AUDIO_SAMPLE_RATE

VOICE = "joe-us"

COMPLETE = (
    "What game are you playing tonight?",
    "Can you say hi to my little brother?",
    "How long have you been streaming today?",
    "That was the best boss fight I have ever seen.",
    "Please turn the music down a little.",
    "Do you think the new update is any good?",
    "I just got home from work.",
    "Where did you find that sword?",
    "Tell us a story about your first stream.",
    "Thanks for the raid, everyone!",
    "Why did you pick the red team?",
    "Let's try that level one more time.",
    "What is your favourite snack?",
    "I have never played this game before.",
    "Could you read the chat for a moment?",
    "Good luck on the next round.",
    "Is it raining where you live?",
    "My cat just walked across the keyboard.",
    "Show us your setup.",
    "How do you beat the final boss?",
    "I think you should go left.",
    "Are you going to stream tomorrow?",
    "That joke was terrible.",
    "What time is it there right now?",
    "We need more healing potions.",
    "Can you explain the rules again?",
    "I love this song.",
    "Who taught you to play like that?",
    "Don't open that door.",
    "Happy birthday, Marionette!",
    "How many subscribers do you have now?",
    "The stream looks great today.",
    "Which character should I pick?",
    "Give me one good reason.",
    "It is way too late for me, good night.",
    "Have you tried turning it off and on again?",
    "I finally finished my homework.",
    "What would you do with a million dollars?",
    "Say something funny.",
    "See you all next week.",
)

INCOMPLETE = (
    "I was thinking about going to the",
    "Can you tell me, because",
    "So what I want to know is",
    "Um, so",
    "And then we went to",
    "What do you think about the",
    "I really wanted to ask you if",
    "My favourite game is probably",
    "The thing is, when I",
    "Could you maybe",
    "I just got back from the store and",
    "Uh, I don't know, maybe",
    "Have you ever been to",
    "So yesterday my friend told me that",
    "If you could pick any",
    "Wait, what was the name of",
    "I think the best way to beat him is to",
    "Honestly, I'm not sure whether",
    "Do you know how to",
    "We should definitely try the",
    "The reason I came here is",
    "Can you play that song by",
    "Okay, so, um",
    "My brother says that you",
    "When you started streaming, did you",
    "I was going to say that",
    "Is it true that the",
    "Let me tell you about my",
    "Hmm, what about",
    "So the other day I was",
    "I have a question about your",
    "Why do you always",
    "Tell me more about",
    "I want to build a house with",
    "The problem with this level is that",
    "Because when I tried it, it",
    "Before you go, could you",
    "My cat likes to sleep on",
    "Well, I guess, uh",
    "So basically what happened was",
)

NOISE_SCALES = (0.333, 0.667, 1.0, 0.5, 0.8)
LENGTH_SCALES = (1.0, 0.9, 1.1)
NOISE_W = 0.8


@dataclasses.dataclass(frozen=True)
class Line:
    text: str
    complete: bool
    seed: int
    noise_scale: float
    length_scale: float

    @property
    def key(self) -> str:
        spec = f"{VOICE}|{self.text}|{self.seed}|{self.noise_scale}|{self.length_scale}|{NOISE_W}"
        return hashlib.sha256(spec.encode()).hexdigest()[:16]


def lines() -> list[Line]:
    """Every line with its settings, complete and incomplete interleaved so that each gets
    the same spread of noise and speed."""
    made = []
    for i, (done, cut) in enumerate(zip(COMPLETE, INCOMPLETE, strict=True)):
        for j, (text, complete) in enumerate(((done, True), (cut, False))):
            n = 2 * i + j
            made.append(Line(text, complete, n, NOISE_SCALES[i % 5], LENGTH_SCALES[(i // 5) % 3]))
    return made


def _seeded_voice(seed: int, graph: bytes, base: object) -> object:
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(graph)
    for node in model.graph.node:
        if node.op_type == "RandomNormalLike":
            node.attribute.append(onnx.helper.make_attribute("seed", float(seed)))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dataclasses.replace(base, session=session)  # type: ignore[type-var]


def speak(wanted: list[Line], cache: Path) -> dict[str, np.ndarray]:
    """Each line's audio (16 kHz float32, as Piper ends it), from cache/piper or made."""
    import soundfile

    folder = cache / "piper"
    folder.mkdir(parents=True, exist_ok=True)
    audio: dict[str, np.ndarray] = {}
    missing = []
    for line in wanted:
        path = folder / f"{line.key}.wav"
        if path.exists():
            audio[line.key] = soundfile.read(str(path), dtype="float32")[0]
        else:
            missing.append(line)
    if not missing:
        return audio

    import soxr
    from piper import PiperVoice, SynthesisConfig

    from services.models.bundled import piper_voice_paths

    model, config = piper_voice_paths(VOICE)
    base = PiperVoice.load(model, config)
    graph = model.read_bytes()
    for line in missing:
        voice = _seeded_voice(line.seed, graph, base)
        settings = SynthesisConfig(
            noise_scale=line.noise_scale, length_scale=line.length_scale, noise_w_scale=NOISE_W
        )
        chunks = list(voice.synthesize(line.text, settings))  # type: ignore[attr-defined]
        samples = np.concatenate([c.audio_float_array for c in chunks])
        samples = soxr.resample(samples, chunks[0].sample_rate, AUDIO_SAMPLE_RATE)
        samples = np.clip(samples, -1.0, 32767 / 32768).astype(np.float32)
        soundfile.write(str(folder / f"{line.key}.wav"), samples, AUDIO_SAMPLE_RATE, "PCM_16")
        audio[line.key] = soundfile.read(str(folder / f"{line.key}.wav"), dtype="float32")[0]
    return audio
