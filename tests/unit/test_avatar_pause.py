"""services.avatar.timeline and pauses: playback's "paused" shuts the mouth at once, and
"playing" after it moves the mouth on from where the audio stopped. Times are given, so
nothing sleeps; each mouth track is a ramp, so a value says which frame of it is shown."""

import pytest

from contracts import AvatarExpr, PlaybackProgress, TtsChunk
from services.avatar.timeline import Timeline

FPS = 30
SESSION, TURN = "local", "t1"


def expr(values: list[float], offset: float = 0.0, state: str = "speaking",
         expression: str = "happy", seq: int = 0) -> AvatarExpr:  # fmt: skip
    return AvatarExpr(session_id=SESSION, turn_id=TURN, seq=seq, expression=expression,
                      fps=FPS, mouth_open=values, offset_s=offset, state=state)  # fmt: skip


def report(played: float, state: str, seq: int, remaining: float | None = None,
           index: int = 0) -> PlaybackProgress:  # fmt: skip
    return PlaybackProgress(session_id=SESSION, turn_id=TURN, seq=seq, chunk_index=index,
                            played_s=played, state=state, remaining_s=remaining)  # fmt: skip


def chunk(text: str, seconds: float, index: int = 0) -> TtsChunk:
    pcm = b"\x00\x00" * int(16_000 * seconds)
    return TtsChunk(session_id=SESSION, turn_id=TURN, seq=index, index=index, text=text,
                    pcm=pcm, sample_rate=16_000)  # fmt: skip


def ramp(frames: int, top: float = 0.9) -> list[float]:
    """Opening wider every frame (never 0), so each frame's value is its own."""
    return [round(0.05 + top * k / frames, 4) for k in range(frames)]


TRACK = ramp(60)  # a two-second chunk


def value_at(seconds: float, track: list[float] = TRACK) -> float:
    return track[int(seconds * FPS + 1e-9)]


def test_a_paused_report_shuts_the_mouth_and_playing_resumes_it_where_the_audio_stopped() -> None:
    timeline = Timeline()
    timeline.on_chunk(chunk("One two three four five six", 2.0))
    timeline.on_expression(expr(TRACK), now=0.0)
    timeline.on_progress(report(0.0, "playing", 0, remaining=2.0), now=10.0)
    assert timeline.frame(10.5).mouth == value_at(0.5)

    timeline.on_progress(report(0.7, "paused", 1), now=10.7)
    for now in (10.7, 11.0, 14.0):  # at once, and for as long as the pause lasts
        frame = timeline.frame(now)
        assert (frame.mouth, frame.speaking) == (0.0, False)
        assert frame.clock == pytest.approx(0.7)
    caption = timeline.frame(14.0).caption
    assert caption == "One two three", "the caption holds where the audio stopped"

    # Playback reports "playing" as it writes the next block: from 0.7 s of the chunk on.
    timeline.on_progress(report(0.7, "playing", 2, remaining=1.3), now=20.0)
    assert timeline.frame(20.0).mouth == value_at(0.7)
    resumed = timeline.frame(20.4)
    assert resumed.speaking
    assert resumed.mouth == value_at(1.1)
    assert resumed.due == pytest.approx(int(1.1 * FPS) / FPS)
    assert timeline.frame(25.0).mouth == 0.0, "past the announced end: silent again"


def test_a_pause_on_control_then_playbacks_report_puts_the_clock_where_playback_stopped() -> None:
    timeline = Timeline()
    timeline.on_expression(expr(TRACK), now=0.0)
    timeline.on_progress(report(0.0, "playing", 0, remaining=2.0), now=0.0)
    timeline.hold(TURN, now=0.50)  # the control message comes first: the mouth shuts
    assert timeline.frame(0.51).mouth == 0.0
    # Playback wrote one more block before it saw the pause: it says where it really is.
    timeline.on_progress(report(0.52, "paused", 1), now=0.53)
    assert timeline.frame(3.0).clock == pytest.approx(0.52)
    assert timeline.frame(3.0).mouth == 0.0
    timeline.on_progress(report(0.52, "playing", 2, remaining=1.48), now=5.0)
    assert timeline.frame(5.2).mouth == value_at(0.72)


def test_a_pause_between_chunks_then_the_next_chunk_plays_from_its_start() -> None:
    timeline = Timeline()
    second = ramp(30, top=0.5)
    timeline.on_expression(expr(TRACK), now=0.0)
    timeline.on_progress(report(0.0, "playing", 0, remaining=2.0), now=0.0)
    # The first chunk played out, the next is late, and a pause comes meanwhile.
    timeline.on_progress(report(2.0, "paused", 1), now=2.1)
    assert timeline.frame(2.2).mouth == 0.0
    timeline.on_expression(expr(second, offset=2.0, seq=2), now=3.0)
    assert timeline.frame(4.0).mouth == 0.0, "a chunk that came during the pause waits"
    timeline.on_progress(report(2.0, "playing", 2, remaining=1.0, index=1), now=6.0)
    assert timeline.frame(6.3).mouth == value_at(0.3, second)


def test_the_end_of_the_reply_sent_during_a_pause_waits_for_its_place() -> None:
    timeline = Timeline()
    timeline.on_expression(expr(TRACK, expression="happy"), now=0.0)
    timeline.on_progress(report(0.0, "playing", 0, remaining=2.0), now=0.0)
    assert timeline.frame(0.1).expression == "happy"
    timeline.on_progress(report(0.5, "paused", 1), now=0.5)
    # The rest of the reply is synthesized while it is paused: its last chunk and idle.
    timeline.on_expression(expr(ramp(30), offset=2.0, expression="surprised", seq=2), now=0.6)
    timeline.on_expression(
        expr([], offset=3.0, state="idle", expression="surprised", seq=3), now=0.6
    )
    paused = timeline.frame(0.7)
    assert paused.expression is None, "the face does not jump to the end of the reply"
    assert paused.mouth == 0.0
    timeline.on_progress(report(0.5, "playing", 2, remaining=1.5), now=10.0)
    assert timeline.frame(11.0).mouth == value_at(1.5)
    assert timeline.frame(11.6).expression == "surprised", "at its place in the audio"
    timeline.on_progress(report(3.0, "finished", 3), now=12.6)
    assert timeline.frame(12.7).mouth == 0.0


def test_an_interrupt_during_a_pause_shows_the_idle_at_once_and_nothing_moves_again() -> None:
    timeline = Timeline()
    timeline.on_expression(expr(TRACK, expression="happy"), now=0.0)
    timeline.on_progress(report(0.0, "playing", 0, remaining=2.0), now=0.0)
    timeline.frame(0.1)
    timeline.on_progress(report(0.5, "paused", 1), now=0.5)
    # The avatar's idle for an interrupt (offset 0) may come before the flushed report.
    timeline.on_expression(expr([], state="idle", expression="neutral", seq=9), now=1.0)
    assert timeline.frame(1.1).expression == "neutral"
    timeline.on_progress(report(0.5, "flushed", 2), now=1.2)
    assert timeline.frame(1.5).mouth == 0.0
    assert not timeline.frame(2.0).speaking
