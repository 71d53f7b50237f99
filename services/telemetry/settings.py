"""Telemetry settings: MARIONETTE_TELEMETRY_* (or [telemetry] in marionette.toml).

The OTLP exporter reads OpenTelemetry's own variables: OTEL_EXPORTER_OTLP_ENDPOINT
(default http://localhost:4318), OTEL_EXPORTER_OTLP_HEADERS and friends.
"""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.settings import MarionetteSettings


class TelemetrySettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_TELEMETRY_")
    toml_table: ClassVar[str | None] = "telemetry"

    traces: Literal["local", "otlp", "both", "off"] = Field(
        default="local",
        description="Where spans go: the local store (`marionette trace` reads it), "
        "an OTLP collector (OTEL_EXPORTER_OTLP_ENDPOINT), both, or nowhere.",
    )
    trace_dir: Path = Field(
        default=Path(".marionette/traces"),
        description="The local span store: one JSON-lines file per process.",
    )
    trace_store_mb: int = Field(
        default=64, ge=1, le=100_000, description="Oldest span files go past this total size."
    )
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Serve Prometheus /metrics on this port; 0: off."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address /metrics listens on (0.0.0.0 in containers)."
    )
