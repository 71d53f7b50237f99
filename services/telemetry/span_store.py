"""The offline span store: each process appends its finished spans to a JSON-lines file.

One file per process, so writers never share a file; `marionette trace` reads them all.
When the files together pass the size cap, the oldest files go.
"""

import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("marionette.telemetry")

ROTATE_FRACTION = 4  # a process starts a new file at a quarter of the cap


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanRecord:
    """A finished span as stored: what a waterfall needs, nothing more."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def event(self, name: str) -> SpanEvent | None:
        return next((event for event in self.events if event.name == name), None)

    def to_json(self) -> dict[str, Any]:
        record = dict(self.__dict__)
        record["events"] = [event.__dict__ for event in self.events]
        return record

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SpanRecord":
        events = tuple(SpanEvent(**event) for event in data.get("events", []))
        return cls(**{**data, "events": events})


def span_record(span: ReadableSpan) -> SpanRecord:
    context = span.get_span_context()
    assert context is not None
    return SpanRecord(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_id=f"{span.parent.span_id:016x}" if span.parent is not None else None,
        name=span.name,
        service=str(span.resource.attributes.get("service.name", "?")),
        kind=span.kind.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        status=span.status.status_code.name,
        attributes={key: _plain(value) for key, value in (span.attributes or {}).items()},
        events=tuple(
            SpanEvent(
                event.name,
                event.timestamp,
                {key: _plain(value) for key, value in (event.attributes or {}).items()},
            )
            for event in span.events
        ),
    )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class LocalSpanExporter(SpanExporter):
    """Appends spans to DIR/SERVICE-HOST-PID-N.jsonl; keeps the directory under the cap."""

    def __init__(self, directory: Path, service: str, cap_bytes: int) -> None:
        self.directory = directory
        self.cap_bytes = cap_bytes
        # Host and pid: replicas in containers are all pid 1 and may share the directory.
        self._stem = f"{service}-{socket.gethostname()}-{os.getpid()}"
        self._number = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._prune()

    @property
    def path(self) -> Path:
        return self.directory / f"{self._stem}-{self._number}.jsonl"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(span).to_json()) + "\n" for span in spans)
        try:
            if self.path.exists() and self.path.stat().st_size > self.cap_bytes // ROTATE_FRACTION:
                self._number += 1
                self._prune()
            with self.path.open("a", encoding="utf-8") as file:
                file.write(lines)
        except OSError as exc:
            log.warning("could not store %d spans in %s: %s", len(spans), self.directory, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _prune(self) -> None:
        files = sorted(self.directory.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        total = sum(path.stat().st_size for path in files)
        for path in files:
            if total <= self.cap_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)

    def shutdown(self) -> None:
        pass


def read_spans(directory: Path) -> list[SpanRecord]:
    """Every span stored in the directory; a line cut short by a crash is skipped."""
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # pruned while we looked
        for line in text.splitlines():
            try:
                records.append(SpanRecord.from_json(json.loads(line)))
            except (ValueError, TypeError):
                continue
    return records
