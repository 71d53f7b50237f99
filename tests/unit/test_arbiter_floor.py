"""The floor of one session: who holds it, from the messages of its turns, in any order."""

from collections.abc import Callable

from services.arbiter.floor import Floor

TIMEOUT_S, TRANSCRIPT_S = 30.0, 3.0


def expire(floor: Floor, now: float) -> list[str]:
    return floor.expire(now, TIMEOUT_S, TRANSCRIPT_S)


def test_a_spoken_turn_holds_the_floor_from_speech_to_the_end_of_playback() -> None:
    floor = Floor()
    assert not floor.busy
    steps: list[tuple[Callable[[float], None], str]] = [
        (lambda t: floor.speech("u1", "start", t), "speaking"),
        (lambda t: floor.speech("u1", "end", t), "transcribing"),
        (lambda t: floor.opened("u1", t), "answering"),
        (lambda t: floor.token("u1", t), "answering"),
        (lambda t: floor.replied("u1", "ok", "Hello!", t), "replied"),
        (lambda t: floor.progress("u1", "playing", 1.5, t), "playing"),
    ]
    for now, (event, phase) in enumerate(steps, 1):
        event(float(now))
        assert floor.busy
        assert floor.why_busy() == phase
    floor.progress("u1", "finished", None, 10.0)
    assert not floor.busy
    assert floor.free_since == 10.0


def test_messages_from_different_topics_out_of_order_never_move_a_turn_back() -> None:
    floor = Floor()
    floor.opened("u1", 1.0)  # asr.final handled before asr.speech's end
    floor.speech("u1", "end", 1.1)
    floor.speech("u1", "start", 1.2)
    assert floor.why_busy() == "answering"
    floor.progress("u1", "playing", 2.0, 2.0)  # playback before policy's final token
    floor.replied("u1", "ok", "Hi", 2.1)
    assert floor.why_busy() == "playing"
    floor.progress("u1", "finished", None, 3.0)
    floor.token("u1", 5.0)  # a late message of an ended turn does not reopen it
    floor.opened("u1", 5.0)
    assert not floor.busy


def test_a_reply_without_audio_frees_the_floor_unless_playback_plays_it_after_all() -> None:
    for status, text in (("blocked", "I won't."), ("error", ""), ("ok", "  ")):
        floor = Floor()
        floor.opened("c1", 1.0)
        floor.replied("c1", status, text, 2.0)  # type: ignore[arg-type]
        assert not floor.busy, status
    floor.progress("c1", "playing", 1.0, 2.5)  # the safe reply is being played
    assert floor.why_busy() == "playing"
    floor.progress("c1", "finished", None, 4.0)
    assert not floor.busy


def test_a_scripted_reply_holds_the_floor_without_an_opening_message() -> None:
    floor = Floor()
    floor.token("say-1", 1.0)
    assert floor.busy


def test_turns_whose_end_never_comes_let_go_after_their_timeout() -> None:
    floor = Floor()
    floor.opened("t1", 0.0)
    floor.speech("u2", "start", 0.0)
    floor.speech("u2", "end", 1.0)  # and asr never makes a transcript (a cough)
    assert expire(floor, 3.9) == []
    assert expire(floor, 4.0) == ["u2"]
    assert expire(floor, 29.9) == []
    assert expire(floor, 30.0) == ["t1"]
    assert not floor.busy
    assert floor.free_since == 30.0


def test_a_long_chunk_playing_holds_the_floor_for_its_remaining_audio() -> None:
    floor = Floor()
    floor.progress("t1", "playing", 25.0, 0.0)
    assert floor.next_deadline(TIMEOUT_S, TRANSCRIPT_S) == 55.0
    assert expire(floor, 54.0) == []


def test_interim_transcripts_keep_a_long_speech_and_tokens_note_once_a_second() -> None:
    floor = Floor()
    floor.speech("u1", "start", 0.0)
    for second in range(1, 60):
        floor.heard("u1", float(second))
        assert expire(floor, float(second)) == []
    assert floor.holds["u1"].seen == 59.0
    floor.token("r1", 100.0)
    floor.token("r1", 100.5)
    assert floor.holds["r1"].seen == 100.0  # not noted: the hold was seen under a second ago
    floor.token("r1", 101.0)
    assert floor.holds["r1"].seen == 101.0


def test_a_released_chat_line_is_marked_and_its_end_is_noted() -> None:
    floor = Floor()
    floor.opened("c1", 1.0, chat=True)
    floor.opened("c1", 1.1)  # its own chat.message comes back: still the arbiter's line
    assert floor.chat_in_flight
    floor.end("c1", 9.0)
    assert not floor.chat_in_flight
    assert floor.chat_ended_at == 9.0
