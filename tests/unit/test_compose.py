"""deploy/docker-compose.yml can not run here (no Docker engine); check what it asks for."""

import re
from pathlib import Path
from typing import Any

import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import pytest
import yaml

from services.asr.settings import AsrSettings
from services.avatar.settings import AvatarSettings
from services.bus.settings import BusSettings
from services.capture.settings import CaptureSettings
from services.cli.app import app
from services.gateway.settings import GatewaySettings
from services.memory.settings import MemorySettings
from services.playback.settings import PlaybackSettings
from services.policy.settings import PolicySettings
from services.registry import STAGES
from services.settings import MarionetteSettings
from services.settings_reference import DOCUMENT_PATH as SETTINGS_DOCUMENT
from services.settings_reference import PROCESS_VARIABLES, settings_reference
from services.telemetry.settings import TelemetrySettings
from services.tts.settings import TtsSettings

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml"
SETTINGS: tuple[type[MarionetteSettings], ...] = (
    BusSettings,
    AsrSettings,
    CaptureSettings,
    PolicySettings,
    TtsSettings,
    AvatarSettings,
    PlaybackSettings,
    GatewaySettings,
    TelemetrySettings,
    MemorySettings,
)
SETTING_NAMES = {
    f"{cls.model_config.get('env_prefix')}{name.upper()}"
    for cls in SETTINGS
    for name in cls.model_fields
} | {"REDIS_URL"}
# OpenTelemetry's own variables (OTEL_EXPORTER_OTLP_ENDPOINT, ...) are read by its SDK, not
# by a Marionette setting: any name its API or SDK defines.
OTEL_NAMES = {
    name
    for module in (opentelemetry.environment_variables, opentelemetry.sdk.environment_variables)
    for name in dir(module)
    if name.startswith("OTEL_")
}


def test_the_settings_reference_documents_every_setting() -> None:
    reference = settings_reference()
    missing = sorted(name for name in SETTING_NAMES if f"`{name}`" not in reference)
    assert not missing, f"`marionette docs` lacks settings: {missing}"


def test_the_committed_settings_reference_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings reference moved from a hand-kept README table to docs/settings.md,
    written by `marionette docs`, so it cannot drift from the code."""
    monkeypatch.chdir(COMPOSE.parents[1])  # defaults that are paths are shown from the root
    assert SETTINGS_DOCUMENT.is_file(), "no docs/settings.md: run `marionette docs`"
    assert SETTINGS_DOCUMENT.read_text() == settings_reference(), (
        "docs/settings.md is stale: run `marionette docs`"
    )


def test_the_readme_names_no_removed_setting() -> None:
    readme = (COMPOSE.parents[1] / "README.md").read_text()
    process = {name for name, _, _ in PROCESS_VARIABLES}
    named = set(re.findall(r"\bMARIONETTE_[A-Z0-9]+(?:_[A-Z0-9]+)*\b", readme))
    unknown = sorted(named - SETTING_NAMES - process)
    assert not unknown, f"README names settings that do not exist: {unknown}"


def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    return dict(document["services"])


def test_every_stage_service_runs_a_known_stage() -> None:
    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    stage_services = {name: svc for name, svc in services().items() if "build" in svc}
    assert stage_services, "compose runs at least one stage"
    for name, service in stage_services.items():
        subcommand, *args = service["command"]
        assert subcommand in commands, f"{name}: `marionette {subcommand}` does not exist"
        if subcommand == "run":
            assert args[0] in STAGES, f"{name}: no stage called {args[0]}"


def test_environment_names_real_settings() -> None:
    for name, service in services().items():
        if "build" not in service:
            continue  # not one of ours (redis, ollama)
        for variable in service.get("environment", {}):
            if variable.startswith("OTEL_"):
                assert variable in OTEL_NAMES, f"{name}: {variable} is no OpenTelemetry variable"
                continue
            assert variable in SETTING_NAMES, f"{name}: {variable} is not a setting"


def test_redis_keeps_acknowledged_messages_across_a_restart() -> None:
    command = " ".join(services()["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync always" in command
