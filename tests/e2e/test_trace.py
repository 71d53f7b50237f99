"""Each turn of the sample run is one trace through every stage process.

The stages of `marionette up` stored their spans in the local span store (one file per
process); the test reads them as `marionette trace` does and checks the trace's shape
against what the bus carried.
"""

import json
import os
import subprocess
import sys

import pytest

from contracts import AsrFinal, AudioFrame, TtsChunk
from services.bus.tracing import TURN_ATTRIBUTE
from services.telemetry.setup import stage_of_service
from services.telemetry.span_store import SpanRecord, read_spans
from tests.e2e.sample_run import SampleRun, of_turn
from tests.integration.workers import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

STAGES = {"asr", "policy", "tts", "avatar", "playback", "arbiter"}
FIXED_SPANS = 23
"""Spans of a turn that do not grow with it: the utterance, two speech events and the
final (a create and a publish span each), policy's handler, recall and generation, tts.speak,
avatar's idle frame and playback's `finished` (two each), `finished` handled by asr
and policy (one each), the two speech events handled by playback (one each), and the
arbiter following the floor: the speech events, the final and `finished` (one each)."""
SPANS_PER_CHUNK = 13
"""Synthesis, publish (2), and in avatar and playback each: handler, publish (2); the
chunk handled by asr (the echo canceller's far end); the `playing` progress handled by
asr, policy and the arbiter (barge-in, memory, the floor): one each."""
SPANS_PER_PARTIAL = 3


def the_trace(spans: list[SpanRecord], turn: str) -> list[SpanRecord]:
    traces = {span.trace_id for span in spans if span.attributes.get(TURN_ATTRIBUTE) == turn}
    assert len(traces) == 1, f"turn {turn} is in {len(traces)} traces"
    return [span for span in spans if span.trace_id in traces]


def wall_time_s(frames: list[AudioFrame], audio_s: float) -> float:
    """When the capture took the sample at audio_s of its timeline."""
    first = min(frames, key=lambda frame: frame.seq)
    return first.captured_at + audio_s - first.seq * first.duration_ms / 1000


def marionette_trace(sample_run: SampleRun, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services", "trace", *args],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "MARIONETTE_TELEMETRY_TRACE_DIR": str(sample_run.trace_dir),
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_links(trace: list[SpanRecord]) -> None:
    """One root, the utterance; every handler hangs under the publish that fed it."""
    by_id = {span.span_id: span for span in trace}
    roots = [span for span in trace if span.parent_id is None]
    assert [span.name for span in roots] == ["asr.utterance"]
    for span in trace:
        assert span.parent_id is None or span.parent_id in by_id, f"{span.name}: lost parent"

    def parent(span: SpanRecord) -> SpanRecord:
        return by_id[span.parent_id or ""]

    def only(stage: str, name: str) -> SpanRecord:
        found = [s for s in trace if stage_of_service(s.service) == stage and name in s.name]
        assert len(found) == 1, (stage, name, [s.name for s in found])
        return found[0]

    handling = only("policy", "asr.final")
    assert handling.name.endswith(" process")
    assert parent(handling).name.endswith(" create")
    assert parent(parent(handling)) is roots[0]
    generate = only("policy", "llm.generate")
    assert parent(generate) is handling
    assert generate.event("first_token") is not None
    speak = only("tts", "tts.speak")
    assert parent(speak) is generate  # through the tokens' headers
    for stage in ("avatar", "playback"):
        handlers = [
            s for s in trace if stage_of_service(s.service) == stage and "process" in s.name
        ]
        chunks = [h for h in handlers if h.name.startswith("tts.chunk")]
        assert chunks, f"no {stage} spans of its chunks"
        for handler in chunks:
            publish = parent(handler)
            assert publish.name.startswith("tts.chunk")
            assert publish.name.endswith(" create")
            assert parent(publish) is speak
        # playback also follows the user's speech (so as not to talk over them).
        for handler in [h for h in handlers if h not in chunks]:
            assert handler.name.startswith("asr.speech"), handler.name
            assert stage_of_service(parent(handler).service) == "asr"


def test_each_turn_is_one_trace_through_every_stage(sample_run: SampleRun) -> None:
    spans = read_spans(sample_run.trace_dir)
    seen = sample_run.seen
    assert seen.finals, "the sample run heard nothing"
    for final in seen.finals:
        turn = final.turn_id or ""
        trace = the_trace(spans, turn)
        assert {stage_of_service(span.service) for span in trace} == STAGES
        check_links(trace)

        # No span per frame or per token: the turn's size bounds the count.
        assert not any("audio.frame" in s.name or "policy.token" in s.name for s in trace)
        chunks = of_turn(seen.chunks, turn)
        partials = of_turn(seen.partials, turn)
        bound = FIXED_SPANS + SPANS_PER_PARTIAL * len(partials) + SPANS_PER_CHUNK * len(chunks)
        assert len(trace) <= bound, sorted(span.name for span in trace)
        heard_frames = (final.speech_end_s - final.speech_start_s) * 1000 / 20
        assert len(trace) < heard_frames

        # The trace starts at the first speech frame's capture time.
        utterance = next(span for span in trace if span.name == "asr.utterance")
        started_s = wall_time_s(seen.frames, final.speech_start_s)
        assert utterance.start_ns / 1e9 == pytest.approx(started_s, abs=0.002)


def first_chunk_created_s(chunks: list[TtsChunk]) -> float:
    return min(chunk.created_at.timestamp() for chunk in chunks)


def test_marionette_trace_shows_each_turn_and_its_voice_to_voice_time(
    sample_run: SampleRun,
) -> None:
    seen = sample_run.seen
    table = marionette_trace(sample_run)
    for final in seen.finals:
        assert f"turn {final.turn_id}" in table
    for stage in STAGES:
        assert stage in table
    assert table.count("voice-to-voice") == len(seen.finals)

    final: AsrFinal = seen.finals[-1]
    turn = final.turn_id or ""
    [line] = marionette_trace(sample_run, turn, "--json").splitlines()
    report = json.loads(line)
    assert report["turn_id"] == turn
    assert {row["stage"] for row in report["stages"]} == STAGES
    assert report["span_count"] == len(report["spans"])
    # The same figure from the bus: the first chunk's creation after the end of speech.
    speech_end_s = wall_time_s(seen.frames, final.speech_end_s)
    from_bus_ms = (first_chunk_created_s(of_turn(seen.chunks, turn)) - speech_end_s) * 1000
    assert report["voice_to_voice_ms"] == pytest.approx(from_bus_ms, abs=50)
    # One turn in detail: every span, nested.
    detail = marionette_trace(sample_run, turn)
    assert "llm.generate" in detail
    assert "tts.synthesize" in detail
