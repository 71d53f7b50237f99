"""Taking a turn's voice-to-voice time apart from the cause links of its messages."""

import pytest

from services.bench.timeline import PARTS, BrokenChain, Published, breakdown, percentile
from services.bus.causes import Cause


def entry_id(at: float) -> str:
    return f"{round(at * 1000)}-0"


def test_parts_follow_the_cause_links_and_add_up_to_the_total() -> None:
    speech_end = 100.000
    frame_added, asr_read = 100.700, 100.705
    final_added, policy_read = 101.000, 101.002
    token_added, unit_token_added, tts_read = 101.300, 101.600, 101.601
    chunk_added, end_of_turn_added = 102.000, 102.100
    final = Published(final_added, Cause("audio.frame.{p1}", entry_id(frame_added), asr_read))
    first_token = Published(
        token_added, Cause("asr.final.{p1}", entry_id(final_added), policy_read)
    )
    first_chunk = Published(
        chunk_added, Cause("policy.token.{p1}", entry_id(unit_token_added), tts_read)
    )

    end_of_turn = Published(end_of_turn_added, Cause("audio.frame.{p1}", entry_id(102.09), 102.09))

    parts = breakdown(speech_end, final, first_token, first_chunk, end_of_turn)

    expected = {
        "endpointing wait": 0.700,
        "hop audio.frame -> asr": 0.005,
        "ASR final": 0.295,
        "hop asr.final -> policy": 0.002,
        "LLM first token": 0.298,
        "first speakable unit": 0.300,
        "hop policy.token -> tts": 0.001,
        "TTS first audio": 0.399,
        "held for end of turn": 0.100,
        "bus hops": 0.008,
        "voice-to-voice": 2.100,
    }
    assert parts == pytest.approx(expected, abs=1e-6)
    assert sum(parts[p] for p in PARTS) == pytest.approx(parts["voice-to-voice"])


def test_a_reply_ready_before_the_end_of_turn_counts_from_the_end_of_turn() -> None:
    """A preemptive reply: its audio was ready before the turn was certain; it can only
    play from the end of turn, so voice-to-voice runs to there."""
    linked = Published(1.0, Cause("s", "1000-0", 1.0))
    parts = breakdown(0.0, linked, linked, Published(1.5, Cause("s", "1400-0", 1.4)),
                      Published(1.8, None))  # fmt: skip
    assert parts["held for end of turn"] == pytest.approx(0.3)
    assert parts["voice-to-voice"] == pytest.approx(1.8)
    assert sum(parts[p] for p in PARTS) == pytest.approx(parts["voice-to-voice"])


def test_a_message_without_cause_headers_is_reported() -> None:
    linked = Published(1.0, Cause("s", "1000-0", 1.0))
    with pytest.raises(BrokenChain, match=r"first tts\.chunk carries no cause"):
        breakdown(0.0, linked, linked, Published(2.0, None), linked)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10
    assert percentile(values, 95) == 19
    assert percentile([7.0], 95) == 7
