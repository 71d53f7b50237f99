"""The per-turn diff: pairing replayed turns with recorded ones and judging what changed;
and the turn tracker that ends `record --turns`."""

from dataclasses import replace

from contracts import AsrFinal, ChatMessage, PlaybackProgress, PolicyToken, TtsChunk
from services.replay.diff import Tolerance, compare, word_error_rate, word_similarity
from services.replay.turns import TurnSummary, TurnTracker


def voice_turn(turn: str = "c1.u500", **changes: object) -> TurnSummary:
    base = TurnSummary(
        session_id="mic", turn_id=turn, kind="voice", heard="What is the capital of France?",
        speech_start_s=0.5, reply="The capital of France is Paris.", status="ok", tokens=9,
        chunks=2, audio_s=2.4, finished=True, opened_at=100.0, speech_end_at=99.5,
        first_token_at=100.8, first_chunk_at=101.1,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_same_turn_replayed_is_the_same() -> None:
    report = compare([voice_turn()], [voice_turn()])
    assert report.ok
    [turn] = report.turns
    assert turn.status == "same"
    assert turn.latency_ms["voice_to_voice"] == (1600.0, 1600.0)


def test_a_different_reply_is_a_change_that_fails_the_report() -> None:
    new = voice_turn(reply="I would rather not talk about geography today.")
    report = compare([voice_turn()], [new])
    assert not report.ok
    [turn] = report.turns
    assert turn.status == "changed"
    reply = turn.field_named("reply")
    assert reply is not None
    assert reply.verdict == "changed"
    heard = turn.field_named("heard")
    assert heard is not None
    assert heard.verdict == "same"


def test_small_differences_within_the_tolerance_are_close_not_changed() -> None:
    new = voice_turn(
        heard="What is the capital of france", reply="The capital of France is Paris!",
        chunks=3, audio_s=2.6,
    )  # fmt: skip
    report = compare([voice_turn()], [new])
    assert report.ok
    assert report.turns[0].status == "close"
    strict = compare([voice_turn()], [new], Tolerance(chunks=0))
    assert not strict.ok


def test_more_audio_than_the_tolerance_is_a_change() -> None:
    report = compare([voice_turn()], [voice_turn(audio_s=3.6)])
    audio = report.turns[0].field_named("audio_s")
    assert audio is not None
    assert audio.verdict == "changed"


def test_a_tool_that_no_longer_runs_is_a_change() -> None:
    recorded = voice_turn(tools=["dice: ok"])
    assert compare([recorded], [voice_turn(tools=["dice: ok"])]).ok
    report = compare([recorded], [voice_turn(tools=[])])
    tools = report.turns[0].field_named("tools")
    assert tools is not None
    assert (tools.recorded, tools.replayed, tools.verdict) == ("dice: ok", "", "changed")
    assert not report.ok


def test_a_voice_turn_pairs_by_where_its_speech_started_when_its_id_moved() -> None:
    shifted = voice_turn("c1.u520", speech_start_s=0.52)
    far = voice_turn("c1.u4000", speech_start_s=4.0, heard="Something else entirely")
    report = compare([voice_turn()], [far, shifted])
    statuses = {t.turn_id: (t.status, t.replayed_turn_id) for t in report.turns}
    assert statuses["c1.u500"] == ("same", "c1.u520")
    assert statuses["c1.u4000"] == ("extra", "c1.u4000")
    assert not report.ok


def test_a_turn_without_a_reply_is_missing_and_one_the_recording_cut_is_not_judged() -> None:
    report = compare(
        [voice_turn("c1.u500"), voice_turn("c1.u9000", speech_start_s=9.0, finished=False)], []
    )
    assert [(t.turn_id, t.status) for t in report.turns] == [
        ("c1.u500", "missing"),
        ("c1.u9000", "unfinished"),
    ]
    assert report.as_json()["counts"] == {"missing": 1, "unfinished": 1}


def test_text_measures() -> None:
    assert word_error_rate("the capital is Paris", "The capital is, Paris.") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5
    assert word_similarity("one two three four", "one two three four") == 1.0
    assert word_similarity("one two three four", "five six") == 0.0


def opened(turn: str) -> ChatMessage:
    return ChatMessage(session_id="s", turn_id=turn, seq=0, platform="cli", author="a", text="hi")


def final_token(turn: str) -> PolicyToken:
    return PolicyToken(
        session_id="s",
        turn_id=turn,
        seq=1,
        index=1,
        text="",
        final=True,
        reply_text="Hi",
        status="ok",
    )


def last_chunk(turn: str) -> TtsChunk:
    return TtsChunk(
        session_id="s",
        turn_id=turn,
        seq=1,
        index=1,
        final=True,
        text="",
        sample_rate=22050,
        pcm=b"",
    )


def test_a_turn_finishes_when_the_last_recorded_stage_is_done_with_it() -> None:
    tracker = TurnTracker(["chat.message", "policy.token", "tts.chunk", "playback.progress"])
    assert tracker.see(opened("t1"), "chat.message", 0.0) == 0
    assert tracker.poll(60.0) == 0, "the reply is awaited however slow the model is"
    assert tracker.see(final_token("t1"), "policy.token", 61.0) == 0
    assert tracker.see(last_chunk("t1"), "tts.chunk", 61.5) == 0
    playing = PlaybackProgress(
        session_id="s", turn_id="t1", seq=0, chunk_index=0, played_s=0, state="playing"
    )
    assert tracker.see(playing, "playback.progress", 61.6) == 0
    assert tracker.poll(90.0) == 0, "playback runs: its end is awaited"
    done = playing.model_copy(update={"seq": 1, "state": "finished"})
    assert tracker.see(done, "playback.progress", 91.0) == 1
    assert tracker.finished == [("s", "t1")]


def test_a_stage_that_never_shows_up_does_not_hold_the_turn_open() -> None:
    tracker = TurnTracker(
        ["chat.message", "policy.token", "tts.chunk", "playback.progress"], grace_s=3
    )
    tracker.see(opened("t1"), "chat.message", 0.0)
    tracker.see(final_token("t1"), "policy.token", 1.0)
    tracker.see(last_chunk("t1"), "tts.chunk", 1.2)
    assert tracker.poll(3.0) == 0
    assert tracker.poll(4.3) == 1  # no playback ran: finished 3 s after the last chunk


def test_only_the_watched_sessions_count() -> None:
    tracker = TurnTracker(["asr.final", "policy.token"], sessions={"mine"})
    other = AsrFinal(
        session_id="other",
        turn_id="u1",
        seq=0,
        text="hi",
        confidence=1,
        speech_start_s=0,
        speech_end_s=1,
    )
    assert tracker.see(other, "asr.final", 0.0) == 0
    assert (
        tracker.see(final_token("u1").model_copy(update={"session_id": "other"}), "policy.token", 1)
        == 0
    )
    assert (
        tracker.see(final_token("u1").model_copy(update={"session_id": "mine"}), "policy.token", 1)
        == 1
    )
