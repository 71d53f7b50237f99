"""Every model Marionette can use from a package, for `marionette models`.

Each entry knows how to check itself quickly (is it installed, is it prepared) and how
to prepare itself (join parts, verify sha256), so the first run of a stage does not.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.models import kokoro_voices
from services.models.bundled import (
    KOKORO_MODEL,
    QWEN_05B,
    piper_voice_paths,
    smart_turn_model_path,
    whisper_model_dir,
)
from services.models.files import ModelMissing, PartedModel, prepare

State = Literal["ready", "not prepared", "missing"]


@dataclass(frozen=True)
class ModelStatus:
    state: State
    detail: str  # the file when ready, what to run or install otherwise


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    used_by: str  # the setting (and value) that selects this model
    size_mb: int
    status: Callable[[], ModelStatus]
    prepare: Callable[[bool], Path]  # show_progress -> the checked file; raises ModelMissing
    default: bool = True  # used by the defaults; an optional model may be missing


def parted_entry(model: PartedModel, used_by: str, *, default: bool = True) -> CatalogEntry:
    def status() -> ModelStatus:
        if model.is_prepared():
            return ModelStatus("ready", str(model.target))
        try:
            model.part_files()
        except ModelMissing as exc:
            return ModelStatus("missing", str(exc))
        return ModelStatus("not prepared", "marionette models --prepare joins and checks it")

    return CatalogEntry(
        name=model.name,
        used_by=used_by,
        size_mb=round(model.size / 1e6),
        status=status,
        prepare=lambda show_progress: prepare(model, show_progress=show_progress),
        default=default,
    )


def checked_entry(
    name: str, used_by: str, size_mb: int, locate: Callable[[], Path]
) -> CatalogEntry:
    """A model used in place from its package; `locate` checks it (raising ModelMissing)."""

    def status() -> ModelStatus:
        try:
            return ModelStatus("ready", str(locate()))
        except ModelMissing as exc:
            return ModelStatus("missing", str(exc))

    return CatalogEntry(name, used_by, size_mb, status, lambda show_progress: locate())


def fetched_entry(
    name: str,
    used_by: str,
    size_mb: int,
    ready: Callable[[], Path | None],
    missing: Callable[[], str | None],
    prepare: Callable[[bool], Path],
) -> CatalogEntry:
    """A model fetched on first use by a tool outside Python (npm): `ready` gives the checked
    file or None, `missing` what to install before it can be fetched (None when nothing)."""

    def status() -> ModelStatus:
        if (path := ready()) is not None:
            return ModelStatus("ready", str(path))
        if (why := missing()) is not None:
            return ModelStatus("missing", why)
        return ModelStatus("not prepared", "marionette models --prepare fetches and checks it")

    return CatalogEntry(name, used_by, size_mb, status, prepare, default=False)


def all_models() -> list[CatalogEntry]:
    return [
        checked_entry(
            "whisper-tiny.en",
            "MARIONETTE_ASR_MODEL=tiny.en (default)",
            75,
            lambda: whisper_model_dir("tiny.en") / "model.bin",
        ),
        checked_entry(
            "smart-turn-v3.2",
            "MARIONETTE_ASR_END_OF_TURN=smart-turn (default)",
            9,
            smart_turn_model_path,
        ),
        parted_entry(QWEN_05B, "MARIONETTE_POLICY_MODEL=qwen2.5-0.5b (default)"),
        checked_entry(
            "piper-joe-us",
            "MARIONETTE_TTS_VOICE=joe-us (default)",
            63,
            lambda: piper_voice_paths("joe-us")[0],
        ),
        parted_entry(KOKORO_MODEL, "MARIONETTE_TTS_BACKEND=kokoro", default=False),
        fetched_entry(
            "kokoro-voices",
            f"MARIONETTE_TTS_BACKEND=kokoro ({kokoro_voices.VOICES_PACKAGE} on npm)",
            28,
            lambda: kokoro_voices.voices_path() if kokoro_voices.voices_prepared() else None,
            kokoro_voices.npm_missing,
            kokoro_voices.prepare_voices,
        ),
    ]
