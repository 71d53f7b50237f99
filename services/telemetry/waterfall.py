"""A turn's waterfall from its stored spans: which stage worked when, and the gaps between.

A trace is one turn (asr's utterance span or a chat message opens it). Per stage: when it
first started on the turn, how long until its last span ended, and the gap since what it
consumed was handed over (a FastStream `create` span marks a publish; a span continuing
the LLM's tokens counts from the first token). Voice-to-voice is measured as
architecture.md defines it: from the end of speech to the first `tts.chunk` published.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.bus.partitions import topic_of_stream
from services.bus.tracing import SESSION_ATTRIBUTE, TURN_ATTRIBUTE
from services.telemetry.setup import stage_of_service
from services.telemetry.span_store import SpanRecord

PIPELINE = ("capture", "asr", "policy", "tts", "avatar", "playback", "monitor")


@dataclass(frozen=True)
class StageRow:
    stage: str
    start_ms: float  # from the start of the turn
    duration_ms: float
    gap_ms: float | None  # since its input was handed over; None for the stage that opened
    spans: int


@dataclass(frozen=True)
class TurnWaterfall:
    trace_id: str
    session_id: str
    turn_id: str
    text: str
    start_ns: int
    rows: list[StageRow]
    spans: list[SpanRecord] = field(repr=False)
    speech_end_ms: float | None
    first_chunk_ms: float | None
    first_played_ms: float | None

    @property
    def voice_to_voice_ms(self) -> float | None:
        """End of speech to first tts.chunk published; None without either."""
        if self.speech_end_ms is None or self.first_chunk_ms is None:
            return None
        return self.first_chunk_ms - self.speech_end_ms

    @property
    def total_ms(self) -> float:
        return max((span.end_ns for span in self.spans), default=self.start_ns) / 1e6 - (
            self.start_ns / 1e6
        )

    def offset_ms(self, time_ns: int) -> float:
        return (time_ns - self.start_ns) / 1e6

    def to_json(self, with_spans: bool = False) -> dict[str, Any]:
        record: dict[str, Any] = {
            "trace_id": self.trace_id,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "text": self.text,
            "start_unix_s": self.start_ns / 1e9,
            "total_ms": round(self.total_ms, 1),
            "speech_end_ms": _rounded(self.speech_end_ms),
            "first_chunk_ms": _rounded(self.first_chunk_ms),
            "first_played_ms": _rounded(self.first_played_ms),
            "voice_to_voice_ms": _rounded(self.voice_to_voice_ms),
            "span_count": len(self.spans),
            "stages": [
                {
                    "stage": row.stage,
                    "start_ms": round(row.start_ms, 1),
                    "duration_ms": round(row.duration_ms, 1),
                    "gap_ms": _rounded(row.gap_ms),
                    "spans": row.spans,
                }
                for row in self.rows
            ],
        }
        if with_spans:
            record["spans"] = [span.to_json() for span in self.spans]
        return record


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def turn_waterfalls(spans: Iterable[SpanRecord]) -> list[TurnWaterfall]:
    """Every turn among the spans, oldest first (traces that are no turn are left out)."""
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    turns = [turn for trace in by_trace.values() if (turn := waterfall(trace)) is not None]
    return sorted(turns, key=lambda turn: turn.start_ns)


def waterfall(trace: list[SpanRecord]) -> TurnWaterfall | None:
    trace = sorted(trace, key=lambda span: (span.start_ns, span.end_ns))
    turn_id = _first_attribute(trace, TURN_ATTRIBUTE)
    if turn_id is None:
        return None
    start_ns = trace[0].start_ns
    by_id = {span.span_id: span for span in trace}

    def offset(time_ns: int | None) -> float | None:
        return None if time_ns is None else (time_ns - start_ns) / 1e6

    utterance = next((span for span in trace if span.name == "asr.utterance"), None)
    speech_end = utterance.event("speech_end") if utterance is not None else None
    chunk_publishes = [s for s in trace if _publishes(s, "tts.chunk") and s.kind == "PRODUCER"]
    played = [s for s in trace if stage_of_service(s.service) == "playback"]
    return TurnWaterfall(
        trace_id=trace[0].trace_id,
        session_id=_first_attribute(trace, SESSION_ATTRIBUTE) or "",
        turn_id=turn_id,
        text=str(utterance.attributes.get("marionette.text", "")) if utterance else "",
        start_ns=start_ns,
        rows=_stage_rows(trace, by_id, start_ns),
        spans=trace,
        speech_end_ms=offset(speech_end.time_ns) if speech_end else None,
        first_chunk_ms=offset(min((s.end_ns for s in chunk_publishes), default=None)),
        first_played_ms=offset(min((s.start_ns for s in played), default=None)),
    )


def _first_attribute(trace: list[SpanRecord], key: str) -> str | None:
    return next((str(span.attributes[key]) for span in trace if key in span.attributes), None)


def _publishes(span: SpanRecord, topic: str) -> bool:
    """A FastStream span of a publish to the topic (its partition streams included)."""
    destination = topic_of_stream(span.name.rsplit(" ", 1)[0])
    return (
        span.name.endswith(" publish") and destination is not None and (destination.name == topic)
    )


def _stage_rows(
    trace: list[SpanRecord], by_id: dict[str, SpanRecord], start_ns: int
) -> list[StageRow]:
    by_stage: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in trace:
        by_stage[stage_of_service(span.service)].append(span)
    rows = []
    for stage, spans in by_stage.items():
        first = spans[0]  # the trace is sorted by start
        end_ns = max(span.end_ns for span in spans)
        rows.append(
            StageRow(
                stage=stage,
                start_ms=(first.start_ns - start_ns) / 1e6,
                duration_ms=(end_ns - first.start_ns) / 1e6,
                gap_ms=_gap_ms(first, by_id),
                spans=len(spans),
            )
        )
    order = {name: number for number, name in enumerate(PIPELINE)}
    return sorted(rows, key=lambda row: (row.start_ms, order.get(row.stage, len(order))))


def _gap_ms(first: SpanRecord, by_id: dict[str, SpanRecord]) -> float | None:
    """From the hand-over of what the stage consumed to the stage's first span."""
    parent = by_id.get(first.parent_id or "")
    if parent is None or parent.service == first.service:
        return None
    if parent.name.endswith(" create"):
        handed_over = parent.end_ns  # FastStream marks the publish with this span
    elif (first_token := parent.event("first_token")) is not None:
        handed_over = first_token.time_ns
    else:
        handed_over = parent.start_ns
    return (first.start_ns - handed_over) / 1e6
