"""Set up a stage process's telemetry: its tracer provider and exporters, and /metrics."""

import contextlib
import logging
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from services.telemetry.metrics import serve_metrics
from services.telemetry.settings import TelemetrySettings
from services.telemetry.span_store import LocalSpanExporter

log = logging.getLogger("marionette.telemetry")

SERVICE_PREFIX = "marionette-"
EXPORT_DELAY_MS = 1000  # spans reach the store about a second after they end


def service_name(stage: str) -> str:
    return f"{SERVICE_PREFIX}{stage}"


def stage_of_service(service: str) -> str:
    return service.removeprefix(SERVICE_PREFIX)


@contextlib.contextmanager
def stage_telemetry(stage: str, settings: TelemetrySettings) -> Iterator[None]:
    """Trace and measure this process as `stage` until the block ends (then flush)."""
    if settings.metrics_port:
        serve_metrics(settings.metrics_port, settings.metrics_host)
    if settings.traces == "off":
        yield
        return
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service_name(stage), "service.namespace": "marionette"}
        )
    )
    if settings.traces in ("local", "both"):
        store = LocalSpanExporter(
            settings.trace_dir, service_name(stage), settings.trace_store_mb * 1024 * 1024
        )
        provider.add_span_processor(
            BatchSpanProcessor(store, schedule_delay_millis=EXPORT_DELAY_MS)
        )
    if settings.traces in ("otlp", "both"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        provider.shutdown()
