"""The span store and the waterfall `marionette trace` draws from it."""

import os
import time
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from services.bus.tracing import TURN_ATTRIBUTE
from services.telemetry.span_store import LocalSpanExporter, SpanEvent, SpanRecord, read_spans
from services.telemetry.waterfall import turn_waterfalls

MS = 1_000_000


def span(
    name: str,
    stage: str,
    start_ms: float,
    end_ms: float,
    *,
    span_id: str,
    parent: str | None = None,
    trace_id: str = "t" * 32,
    kind: str = "INTERNAL",
    turn: str | None = None,
    events: tuple[SpanEvent, ...] = (),
) -> SpanRecord:
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent,
        name=name,
        service=f"marionette-{stage}",
        kind=kind,
        start_ns=int(start_ms * MS),
        end_ns=int(end_ms * MS),
        status="UNSET",
        attributes={TURN_ATTRIBUTE: turn} if turn else {},
        events=events,
    )


def voice_turn(trace_id: str = "t" * 32, at_ms: float = 0.0) -> list[SpanRecord]:
    def t(ms: float) -> float:
        return at_ms + ms

    return [
        span("asr.utterance", "asr", t(0), t(1500), span_id="u", turn="c1.u0", trace_id=trace_id,
             events=(SpanEvent("speech_end", int(t(1000) * MS)),)),
        span("asr.final.{p1} create", "asr", t(1499), t(1499), span_id="fc", parent="u",
             trace_id=trace_id, kind="PRODUCER"),
        span("asr.final.{p1} process", "policy", t(1502), t(2600), span_id="fp", parent="fc",
             trace_id=trace_id, kind="CONSUMER", turn="c1.u0"),
        span("llm.generate", "policy", t(1503), t(2590), span_id="g", parent="fp",
             trace_id=trace_id, events=(SpanEvent("first_token", int(t(1800) * MS)),)),
        span("tts.speak", "tts", t(1810), t(2700), span_id="s", parent="g", trace_id=trace_id),
        span("tts.chunk.{p1} create", "tts", t(2100), t(2100), span_id="cc", parent="s",
             trace_id=trace_id, kind="PRODUCER"),
        span("tts.chunk.{p1} publish", "tts", t(2100), t(2103), span_id="cp", parent="cc",
             trace_id=trace_id, kind="PRODUCER"),
        span("tts.chunk.{p1} process", "playback", t(2110), t(3000), span_id="pp", parent="cc",
             trace_id=trace_id, kind="CONSUMER"),
    ]  # fmt: skip


def test_a_voice_turn_gives_each_stage_its_start_duration_and_gap() -> None:
    [turn] = turn_waterfalls(voice_turn())
    assert turn.turn_id == "c1.u0"
    rows = {row.stage: row for row in turn.rows}
    assert [row.stage for row in turn.rows] == ["asr", "policy", "tts", "playback"]
    assert rows["asr"].gap_ms is None  # it opened the turn
    assert rows["policy"].start_ms == 1502
    assert rows["policy"].gap_ms == 3  # after the final's publish
    assert rows["tts"].gap_ms == 10  # after the LLM's first token
    assert rows["playback"].gap_ms == 10
    assert rows["policy"].duration_ms == 1098
    # End of speech (1000) to the first tts.chunk published (2103).
    assert turn.voice_to_voice_ms == 1103
    assert turn.first_played_ms == 2110
    assert turn.total_ms == 3000


def test_turns_come_oldest_first_and_traces_of_no_turn_are_left_out() -> None:
    later = voice_turn("b" * 32, at_ms=10_000)
    earlier = voice_turn("a" * 32, at_ms=0)
    summary = [span("policy.summarize", "policy", 20_000, 21_000, span_id="x", trace_id="c" * 32)]
    turns = turn_waterfalls([*later, *summary, *earlier])
    assert [turn.trace_id[0] for turn in turns] == ["a", "b"]


def test_a_chat_turn_has_no_voice_to_voice_but_its_first_chunk() -> None:
    chat = [s for s in voice_turn() if s.service != "marionette-asr"]
    [turn] = turn_waterfalls(chat)
    assert turn.voice_to_voice_ms is None
    assert turn.first_chunk_ms == 2103 - 1502


def test_the_store_keeps_what_the_sdk_finished_and_skips_a_torn_line(tmp_path: Path) -> None:
    store = LocalSpanExporter(tmp_path, "marionette-asr", cap_bytes=10**6)
    provider = TracerProvider(resource=Resource.create({"service.name": "marionette-asr"}))
    provider.add_span_processor(SimpleSpanProcessor(store))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "asr.utterance", attributes={TURN_ATTRIBUTE: "c1.u0"}
    ) as root:
        root.add_event("speech_end")
        with tracer.start_as_current_span("asr.transcribe"):
            pass
    provider.shutdown()
    with store.path.open("a") as file:
        file.write('{"trace_id": "cut sho')  # a crash mid-write
    records = {record.name: record for record in read_spans(tmp_path)}
    assert set(records) == {"asr.utterance", "asr.transcribe"}
    utterance, transcribe = records["asr.utterance"], records["asr.transcribe"]
    assert transcribe.parent_id == utterance.span_id
    assert utterance.parent_id is None
    assert transcribe.trace_id == utterance.trace_id
    assert utterance.service == "marionette-asr"
    assert utterance.attributes[TURN_ATTRIBUTE] == "c1.u0"
    assert utterance.event("speech_end") is not None
    assert utterance.start_ns <= transcribe.start_ns <= transcribe.end_ns <= utterance.end_ns


def test_the_oldest_span_files_go_once_the_store_is_over_its_cap(tmp_path: Path) -> None:
    for number in range(5):
        old = tmp_path / f"marionette-tts-host-{number}-0.jsonl"
        old.write_text("x" * 1000)
        os.utime(old, (time.time() - 100 + number, time.time() - 100 + number))
    LocalSpanExporter(tmp_path, "marionette-asr", cap_bytes=2500)
    left = sorted(path.name for path in tmp_path.glob("*.jsonl"))
    assert left == ["marionette-tts-host-3-0.jsonl", "marionette-tts-host-4-0.jsonl"]
