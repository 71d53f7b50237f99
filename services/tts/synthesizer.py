"""Speech synthesis behind one small interface: Piper (the default) or Kokoro."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from contracts.tts import PhonemeTiming
from services.models.bundled import PIPER_VOICES, piper_voice_paths
from services.models.files import ModelMissing, cache_dir
from services.tts.settings import TtsSettings


@dataclass(frozen=True)
class Speech:
    pcm: bytes  # s16le mono
    sample_rate: int
    alignments: list[PhonemeTiming]


class SpeechSynthesizer(Protocol):
    @property
    def sample_rate(self) -> int:
        """Of every Speech it returns, so an empty chunk can carry the same."""
        ...

    def synthesize(self, text: str) -> Speech:
        """Blocking: call it from a worker thread."""
        ...


def _voice_paths(voice: str) -> tuple[Path, Path]:
    if voice in PIPER_VOICES:
        return piper_voice_paths(voice)
    model = Path(voice)
    config = model.with_suffix(model.suffix + ".json")
    if not model.is_file() or not config.is_file():
        raise ModelMissing(
            f"MARIONETTE_TTS_VOICE={voice!r}: need a Piper voice .onnx with its .onnx.json "
            f"beside it, or a bundled voice ({', '.join(PIPER_VOICES)})"
        )
    return model, config


def aligned_voice(model: Path) -> Path:
    """The voice with the output that gives per-phoneme timings (what lip-sync reads).

    Piper can add it as it loads a voice (with the onnx package), which costs a third of a
    second at every start; it is made once into the model cache instead, and remade when
    the voice file changes."""
    info = model.stat()
    seal = f"{model.resolve()} {info.st_size} {info.st_mtime_ns}"
    target = cache_dir() / f"{model.stem}.aligned.onnx"
    stamp = target.with_suffix(".source")
    if target.is_file() and stamp.is_file() and stamp.read_text() == seal:
        return target
    import onnx
    from piper.patch_voice_with_alignment import add_alignment_output

    patched = onnx.load(str(model))
    try:
        add_alignment_output(patched)
    except ValueError:
        return model  # it has the output already
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    onnx.save(patched, str(partial))
    partial.replace(target)
    stamp.write_text(seal)
    return target


def _session(model: Path, threads: int) -> Any:
    """Piper's onnxruntime session with a set number of threads (Piper's own takes one per
    core: on a large machine, more than a short unit can use)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


class PiperSynthesizer:
    def __init__(self, settings: TtsSettings) -> None:
        from piper import PiperVoice, SynthesisConfig

        model, config = _voice_paths(settings.voice)
        aligned = aligned_voice(model)
        self._voice = PiperVoice.load(aligned, config)
        self._voice.session = _session(aligned, settings.piper_threads)
        self.sample_rate: int = self._voice.config.sample_rate
        variation = settings.variation
        self._config = SynthesisConfig(
            length_scale=1.0 / settings.speed,
            noise_scale=variation,
            noise_w_scale=variation,
        )

    def synthesize(self, text: str) -> Speech:
        chunks = list(self._voice.synthesize(text, self._config, include_alignments=True))
        if not chunks:
            return Speech(b"", self.sample_rate, [])
        pcm = b"".join(chunk.audio_int16_bytes for chunk in chunks)
        alignments: list[PhonemeTiming] = []
        start = 0
        for chunk in chunks:
            if chunk.phoneme_alignments is None:
                # Piper could not align this sentence: timings for the others would then
                # run early from here on; none at all lets lip-sync and "what was heard"
                # fall back to the audio itself.
                return Speech(pcm, chunks[0].sample_rate, [])
            for item in chunk.phoneme_alignments:
                alignments.append(
                    PhonemeTiming(
                        phoneme=item.phoneme or "_", start_sample=start,
                        num_samples=int(item.num_samples),
                    )
                )  # fmt: skip
                start += int(item.num_samples)
        return Speech(pcm, chunks[0].sample_rate, alignments)


def make_synthesizer(settings: TtsSettings) -> SpeechSynthesizer:
    if settings.backend == "kokoro":
        # Imported here: that module imports this one, and needs the optional kokoro extra.
        from services.tts.kokoro import KokoroSynthesizer

        return KokoroSynthesizer(settings)
    return PiperSynthesizer(settings)
