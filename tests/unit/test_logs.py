"""Log lines: people's by default, one JSON object a line on request."""

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from contracts import ChatMessage
from services.bus.tracing import handled_envelope
from services.errors import ConfigError
from services.logs import JsonFormatter, log_format, setup_logging


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("marionette.tts", logging.INFO, __file__, 1, message, args, None)


def test_json_lines_carry_stage_level_logger_and_the_turn_in_hand() -> None:
    formatter = JsonFormatter("tts")
    chat = ChatMessage(session_id="s1", turn_id="t9", seq=0, platform="cli", author="a", text="x")
    token = handled_envelope.set(chat)
    tracer = TracerProvider().get_tracer("test")
    try:
        with tracer.start_as_current_span("turn") as span:
            line = json.loads(formatter.format(record("spoke %d units", 3)))
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        handled_envelope.reset(token)
    assert line["stage"] == "tts"
    assert line["level"] == "info"
    assert line["logger"] == "marionette.tts"
    assert line["message"] == "spoke 3 units"
    assert (line["session"], line["turn"]) == ("s1", "t9")
    assert line["trace_id"] == trace_id
    assert line["time"].endswith("+00:00")


def test_outside_a_turn_a_json_line_has_no_turn() -> None:
    line = json.loads(JsonFormatter("asr").format(record("listening")))
    assert set(line) == {"time", "stage", "level", "logger", "message"}


def test_the_format_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARIONETTE_LOG_FORMAT", raising=False)
    assert log_format() == "text"
    monkeypatch.setenv("MARIONETTE_LOG_FORMAT", "JSON")
    assert log_format() == "json"
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    try:
        setup_logging(stage="policy")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:], _ = before[0], root.setLevel(before[1])
    monkeypatch.setenv("MARIONETTE_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="MARIONETTE_LOG_FORMAT='xml': use text"):
        log_format()
