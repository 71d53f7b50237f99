"""Turn rules, in one place: how turns are named and which message ends one."""

import pytest

from contracts import ChatMessage, PlaybackProgress, PolicyToken, TtsChunk
from contracts.turns import (
    capture_run_of,
    ends_turn,
    playback_ended,
    reply_ended,
    speech_ended,
    utterance_turn_id,
)
from services.replay.turns import TurnTracker


def progress(state: str, seq: int = 0) -> PlaybackProgress:
    return PlaybackProgress(
        session_id="s", turn_id="t1", seq=seq, chunk_index=0, played_s=1.0,
        state=state,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "ended"),
    [("playing", False), ("paused", False), ("finished", True), ("flushed", True)],
)
def test_playback_ends_a_turn_when_it_finished_or_was_flushed_not_paused(
    state: str, ended: bool
) -> None:
    assert playback_ended(progress(state)) is ended
    assert ends_turn(progress(state), "playback.progress") is ended


def test_the_reply_and_its_speech_end_with_their_final_message() -> None:
    token = PolicyToken(session_id="s", turn_id="t1", seq=0, index=0, text="Hi")
    last = token.model_copy(update={"final": True, "reply_text": "Hi", "status": "ok"})
    chunk = TtsChunk(session_id="s", turn_id="t1", seq=0, index=0, text="Hi", sample_rate=16000,
                     pcm=b"")  # fmt: skip
    assert (reply_ended(token), reply_ended(last)) == (False, True)
    assert speech_ended(chunk.model_copy(update={"final": True}))
    assert not speech_ended(chunk)
    assert ends_turn(last, "policy.token")
    assert not ends_turn(last, "tts.chunk")
    chat = ChatMessage(session_id="s", turn_id="t1", seq=0, platform="cli", author="a", text="x")
    assert not ends_turn(chat, "unknown.topic")


def test_an_utterance_turn_names_its_capture_run() -> None:
    turn = utterance_turn_id("c1796019001852", 3940)
    assert turn == "c1796019001852.u3940"
    assert capture_run_of(turn) == "c1796019001852"
    assert capture_run_of("chaos7") is None, "a chat turn has no capture run"
    assert capture_run_of("a.ubuntu") is None


def test_a_pause_does_not_end_a_turn_for_the_recorder() -> None:
    """`marionette record --turns N` stopped early: a paused reply counted as finished."""
    tracker = TurnTracker(["chat.message", "policy.token", "playback.progress"])
    tracker.see(ChatMessage(session_id="s", turn_id="t1", seq=0, platform="cli", author="a",
                            text="x"), "chat.message", 0.0)  # fmt: skip
    reply = PolicyToken(session_id="s", turn_id="t1", seq=0, index=0, text="", final=True,
                        reply_text="Hi", status="ok")  # fmt: skip
    assert tracker.see(reply, "policy.token", 0.5) == 0
    assert tracker.see(progress("playing"), "playback.progress", 1.0) == 0
    assert tracker.see(progress("paused", seq=1), "playback.progress", 2.0) == 0
    assert tracker.finished == []
    assert tracker.see(progress("finished", seq=2), "playback.progress", 3.0) == 1
