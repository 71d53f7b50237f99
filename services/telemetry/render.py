"""`marionette trace` output: a turn's waterfall as a table with bars."""

from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.telemetry.setup import stage_of_service
from services.telemetry.span_store import SpanRecord
from services.telemetry.waterfall import TurnWaterfall

BAR_WIDTH = 40
STAGE_STYLES = {
    "asr": "cyan",
    "policy": "magenta",
    "tts": "green",
    "avatar": "yellow",
    "playback": "blue",
}


def _bar(turn: TurnWaterfall, start_ms: float, duration_ms: float, style: str) -> Text:
    scale = BAR_WIDTH / max(turn.total_ms, 1.0)
    left = min(int(start_ms * scale), BAR_WIDTH - 1)
    width = max(1, min(round(duration_ms * scale), BAR_WIDTH - left))
    return Text(" " * left) + Text("█" * width, style=style)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _title(turn: TurnWaterfall) -> str:
    said = f'  "{turn.text}"' if turn.text else ""
    return f"turn {turn.turn_id}  (session {turn.session_id}, trace {turn.trace_id[:12]}){said}"


def _summary(turn: TurnWaterfall) -> str:
    parts = [f"{len(turn.spans)} spans, {turn.total_ms:,.0f} ms in all"]
    if turn.voice_to_voice_ms is not None:
        parts.insert(
            0,
            f"voice-to-voice {turn.voice_to_voice_ms:,.0f} ms (end of speech at "
            f"{_ms(turn.speech_end_ms)} ms, first tts.chunk at {_ms(turn.first_chunk_ms)} ms)",
        )
    elif turn.first_chunk_ms is not None:
        parts.insert(0, f"first tts.chunk at {_ms(turn.first_chunk_ms)} ms")
    if turn.first_played_ms is not None:
        parts.append(f"playback from {_ms(turn.first_played_ms)} ms")
    return "; ".join(parts)


def print_turn(console: Console, turn: TurnWaterfall) -> None:
    """One row per stage: start, duration, gap since its input was handed over."""
    console.print(Text(_title(turn), style="bold"), soft_wrap=True)
    table = Table(box=None, pad_edge=False)
    table.add_column("stage")
    table.add_column("start ms", justify="right")
    table.add_column("duration ms", justify="right")
    table.add_column("gap ms", justify="right")
    table.add_column("spans", justify="right")
    table.add_column("waterfall", no_wrap=True)
    for row in turn.rows:
        style = STAGE_STYLES.get(row.stage, "white")
        table.add_row(
            Text(row.stage, style=style),
            _ms(row.start_ms),
            _ms(row.duration_ms),
            _ms(row.gap_ms),
            str(row.spans),
            _bar(turn, row.start_ms, row.duration_ms, style),
        )
    console.print(table)
    console.print(f"  {_summary(turn)}\n", highlight=False)


def print_spans(console: Console, turn: TurnWaterfall) -> None:
    """Every span of the turn, nested under its parent."""
    children: dict[str | None, list[SpanRecord]] = {}
    known = {span.span_id for span in turn.spans}
    for span in turn.spans:
        parent = span.parent_id if span.parent_id in known else None
        children.setdefault(parent, []).append(span)
    table = Table(box=None, pad_edge=False)
    for column in ("span", "stage", "start ms", "duration ms", "waterfall"):
        table.add_column(column, justify="right" if column.endswith("ms") else "left")

    def add(span: SpanRecord, depth: int) -> None:
        stage = stage_of_service(span.service)
        style = STAGE_STYLES.get(stage, "white")
        start = turn.offset_ms(span.start_ns)
        marks = "".join(f" ◆{event.name}" for event in span.events)
        table.add_row(
            Text("  " * depth + span.name) + Text(marks, style="dim"),
            Text(stage, style=style),
            _ms(start),
            f"{span.duration_ms:,.1f}",
            _bar(turn, start, span.duration_ms, style),
        )
        for child in children.get(span.span_id, []):
            add(child, depth + 1)

    for root in children.get(None, []):
        add(root, 0)
    console.print(table)
