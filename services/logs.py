"""Log lines: for people (the default), or one JSON object a line for log collectors.

MARIONETTE_LOG_FORMAT=json gives, per line: time, stage, level, logger, message, and when
known the session and turn of the message being handled and the trace id, so a log line
can be joined to its turn's trace.
"""

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Literal

from opentelemetry import trace
from rich.console import Console
from rich.logging import RichHandler

from services.bus.tracing import handled_envelope
from services.errors import ConfigError

LOG_FORMAT_ENV = "MARIONETTE_LOG_FORMAT"
LogFormat = Literal["text", "json"]
QUIET_LIBRARIES = ("faststream", "faststream.access.redis", "faster_whisper")


def log_format() -> LogFormat:
    value = os.environ.get(LOG_FORMAT_ENV, "text").strip().lower() or "text"
    if value not in ("text", "json"):
        raise ConfigError(f"{LOG_FORMAT_ENV}={value!r}: use text (the default) or json")
    return "json" if value == "json" else "text"


class JsonFormatter(logging.Formatter):
    def __init__(self, stage: str | None) -> None:
        super().__init__()
        self.stage = stage

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "stage": self.stage,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        envelope = handled_envelope.get()
        if envelope is not None:
            line["session"] = envelope.session_id
            if envelope.turn_id:
                line["turn"] = envelope.turn_id
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(
    *, verbose: bool = False, stage: str | None = None, console: Console | None = None,
    plain: bool = False,
) -> None:  # fmt: skip
    """plain: short lines without rich's layout (a stage under `marionette up`, which puts
    the stage's name in front of each)."""
    handler: logging.Handler
    if log_format() == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(stage))
    elif plain:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)-7s %(name)s: %(message)s"))
    else:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
