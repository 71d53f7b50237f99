"""Utterance endpointing, driven by a scripted voice activity detector."""

import itertools

import pytest

from services.asr.endpointer import (
    Endpointer,
    Event,
    FinalReady,
    PartialDue,
    SpeechEnded,
    SpeechStarted,
)
from services.asr.settings import AsrSettings

CHUNK_MS = 30
CHUNK_BYTES = 16 * 2 * CHUNK_MS  # 30 ms of 16 kHz s16le
VOICED, SILENT = b"\x01", b"\x00"


class ScriptedVad:
    """Calls a chunk speech when its first byte is 1."""

    chunk_ms = CHUNK_MS

    def is_speech(self, chunk: bytes) -> bool:
        return chunk[:1] == VOICED


def settings(**overrides: object) -> AsrSettings:
    base: dict[str, object] = {
        "start_speech_ms": 90, "end_silence_ms": 600, "preroll_ms": 300, "min_speech_ms": 250,
        "partial_interval_ms": 1000, "speculate_after_ms": 150, "max_utterance_s": 30.0,
    }  # fmt: skip
    return AsrSettings(**{**base, **overrides})  # type: ignore[arg-type]


def feed(endpointer: Endpointer, pattern: str, start_s: float = 0.0) -> list[tuple[float, Event]]:
    """Pattern: one character per 30 ms chunk, 'x' voiced, '.' silent; 20 ms frames in."""
    audio = b"".join((VOICED if c == "x" else SILENT) * CHUNK_BYTES for c in pattern)
    events: list[tuple[float, Event]] = []
    for offset in range(0, len(audio), 640):
        at_s = start_s + offset / 32000
        events += [(at_s, e) for e in endpointer.push(audio[offset : offset + 640], at_s)]
    return events


def kinds(events: list[tuple[float, Event]]) -> list[str]:
    return [
        type(e).__name__ + ("(endpoint)" if getattr(e, "endpoint", False) else "")
        for _, e in events
    ]


def test_an_utterance_starts_ends_and_is_final_once_the_silence_is_long_enough() -> None:
    endpointer = Endpointer(settings(), ScriptedVad())
    events = feed(endpointer, "." * 20 + "x" * 30 + "." * 25)
    assert kinds(events) == ["SpeechStarted", "FinalReady", "SpeechEnded", "FinalReady(endpoint)"]
    started = events[0][1]
    assert isinstance(started, SpeechStarted)
    assert started.speech_start_s == pytest.approx(20 * 0.03)
    assert started.utterance_start_s == pytest.approx(10 * 0.03), "300 ms of pre-roll kept"
    ended = events[2][1]
    assert isinstance(ended, SpeechEnded)
    assert ended.speech_end_s == pytest.approx(50 * 0.03)


def test_the_speculative_final_has_the_same_audio_as_the_endpoint() -> None:
    events = [e for _, e in feed(Endpointer(settings(), ScriptedVad()), "x" * 30 + "." * 25)]
    speculative, final = [e for e in events if isinstance(e, FinalReady)]
    assert not speculative.endpoint
    assert final.endpoint
    assert speculative.audio == final.audio
    # voiced audio plus 100 ms of tail, no trailing silence beyond that
    assert len(final.audio) == (30 + 3) * CHUNK_BYTES


def test_speculation_starts_before_the_endpoint() -> None:
    events = feed(Endpointer(settings(), ScriptedVad()), "x" * 30 + "." * 25)
    times = {kinds([(t, e)])[0]: t for t, e in events}
    assert times["FinalReady"] < times["FinalReady(endpoint)"] - 0.4


def test_new_speech_after_speculation_makes_a_new_final() -> None:
    events = [
        e
        for _, e in feed(
            Endpointer(settings(), ScriptedVad()), "x" * 20 + "." * 8 + "x" * 10 + "." * 25
        )
    ]
    finals = [e for e in events if isinstance(e, FinalReady)]
    assert [f.endpoint for f in finals] == [False, False, True]
    assert finals[0].audio != finals[-1].audio
    assert finals[1].audio == finals[-1].audio
    assert sum(isinstance(e, SpeechStarted) for e in events) == 1, "a short pause is one utterance"


def test_a_blip_shorter_than_the_minimum_is_not_transcribed() -> None:
    events = feed(Endpointer(settings(), ScriptedVad()), "." * 10 + "x" * 5 + "." * 30)
    assert kinds(events) == ["SpeechStarted", "SpeechEnded"]


def test_isolated_voiced_chunks_do_not_start_speech() -> None:
    assert feed(Endpointer(settings(), ScriptedVad()), ".x..x.x..x.." * 10) == []


def test_partials_come_at_the_configured_interval_of_new_speech() -> None:
    events = feed(
        Endpointer(settings(partial_interval_ms=600), ScriptedVad()), "x" * 100 + "." * 25
    )
    partials = [e for _, e in events if isinstance(e, PartialDue)]
    assert len(partials) == 5  # 3 s of speech, one every 0.6 s
    assert all(len(a.audio) < len(b.audio) for a, b in itertools.pairwise(partials))


def test_a_long_utterance_is_cut_at_the_maximum() -> None:
    events = feed(Endpointer(settings(max_utterance_s=2.0), ScriptedVad()), "x" * 120)
    finals = [e for _, e in events if isinstance(e, FinalReady) and e.endpoint]
    assert len(finals) >= 1
    assert len(finals[0].audio) <= int(2.0 / 0.03 + 1) * CHUNK_BYTES
