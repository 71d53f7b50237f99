"""services.avatar.timeline: what OBS and VTube Studio are shown at a moment, from the
events (the overlay's timeline.mjs, in Python). Times are given, so nothing sleeps."""

import pytest

from contracts import AvatarExpr, PlaybackProgress, TtsChunk
from services.avatar.timeline import CAPTION_LINGER_S, Timeline

FPS = 30
SESSION, TURN = "local", "t1"


def expr(values: list[float], offset: float = 0.0, state: str = "speaking",
         expression: str = "happy", seq: int = 0) -> AvatarExpr:  # fmt: skip
    return AvatarExpr(session_id=SESSION, turn_id=TURN, seq=seq, expression=expression,
                      fps=FPS, mouth_open=values, offset_s=offset, state=state)  # type: ignore[arg-type]  # fmt: skip


def progress(played: float, state: str = "playing", remaining: float | None = 1.0,
             seq: int = 0) -> PlaybackProgress:  # fmt: skip
    return PlaybackProgress(session_id=SESSION, turn_id=TURN, seq=seq, chunk_index=0,
                            played_s=played, state=state, remaining_s=remaining)  # type: ignore[arg-type]  # fmt: skip


def chunk(text: str, seconds: float, index: int = 0) -> TtsChunk:
    pcm = b"\x00\x00" * int(16_000 * seconds)
    return TtsChunk(session_id=SESSION, turn_id=TURN, seq=index, index=index, text=text,
                    pcm=pcm, sample_rate=16_000, final=False)  # fmt: skip


def ramp(frames: int) -> list[float]:
    return [round(k / frames, 3) for k in range(frames)]


def test_the_mouth_follows_the_audio_clock_from_the_playing_report() -> None:
    timeline = Timeline()
    timeline.on_expression(expr(ramp(30)), now=0.0)
    assert not timeline.frame(0.5).speaking  # no report yet: audio not playing
    timeline.on_progress(progress(0.0), now=10.0)
    frame = timeline.frame(10.5)
    assert frame.speaking
    assert frame.mouth == ramp(30)[15]
    assert frame.due == pytest.approx(0.5)
    assert frame.expression == "happy"  # the track's expression, once its place has come
    assert timeline.frame(10.6).expression is None  # said once, not every frame


def test_the_clock_stops_at_the_announced_chunk_end_and_on_pause() -> None:
    timeline = Timeline()
    timeline.on_expression(expr([0.5] * 90), now=0.0)
    timeline.on_progress(progress(0.0, remaining=1.0), now=0.0)
    assert timeline.frame(2.0).clock == pytest.approx(1.0)  # nothing said it plays on
    assert not timeline.frame(2.0).speaking
    timeline.on_progress(progress(1.0, remaining=2.0, seq=1), now=2.0)
    assert timeline.frame(2.5).speaking
    timeline.hold(TURN, now=2.5)  # a pause on control, before playback reports it
    held = timeline.frame(3.0)
    assert not held.speaking
    assert held.mouth == 0.0
    assert held.clock == pytest.approx(1.5)


def test_an_interrupt_shuts_the_mouth_at_once_and_for_good() -> None:
    timeline = Timeline()
    timeline.on_expression(expr([0.8] * 90), now=0.0)
    timeline.on_progress(progress(0.0, remaining=3.0), now=0.0)
    assert timeline.frame(1.0).mouth == 0.8
    timeline.stop(TURN, now=1.0)
    assert timeline.frame(1.1).mouth == 0.0
    assert not timeline.frame(1.5).speaking


def test_the_end_of_reply_idle_stops_the_mouth_at_its_place_in_the_audio() -> None:
    timeline = Timeline()
    timeline.on_expression(expr([0.7] * 60), now=0.0)
    timeline.on_expression(expr([], offset=1.0, state="idle", expression="neutral", seq=1), 0.0)
    timeline.on_progress(progress(0.0, remaining=3.0), now=0.0)
    assert timeline.frame(0.9).speaking
    after = timeline.frame(1.2)
    assert not after.speaking
    assert after.mouth == 0.0
    assert after.expression == "neutral"


def test_captions_reveal_words_as_they_are_heard_then_clear() -> None:
    timeline = Timeline()
    timeline.on_chunk(chunk("Hello chat, welcome back!", 2.0))
    timeline.on_progress(progress(0.0, remaining=2.0), now=0.0)
    assert timeline.frame(0.0).caption == ""
    assert timeline.frame(0.3).caption == "Hello"
    assert timeline.frame(1.0).caption == "Hello chat, welcome"
    assert timeline.frame(1.99).caption == "Hello chat, welcome back!"
    timeline.on_progress(progress(2.0, state="finished", remaining=None, seq=1), now=2.0)
    assert timeline.frame(2.0 + CAPTION_LINGER_S / 2).caption == "Hello chat, welcome back!"
    assert timeline.frame(2.1 + CAPTION_LINGER_S).caption == ""
