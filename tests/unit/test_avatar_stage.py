"""avatar in memory: a mouth track per chunk, idle at the end, interrupts, blinks, crashes."""

import asyncio
import random
from typing import Any

import numpy as np
import pytest

from contracts import AvatarExpr, Control, Envelope, Interrupt, TtsChunk
from contracts.topics import AVATAR_EXPR
from services.avatar.settings import AvatarSettings
from services.avatar.stage import INTERRUPTED_SEQ, AvatarStage
from services.bus.harness import SimulatedCrash, StageHarness

RATE = 22_050
TEXTS = ["Hello there, my friend!", "The weather is lovely today.", "Shall we play chess?"]


def voice(seconds: float, pitch_hz: float = 180.0) -> bytes:
    """A loud voiced sound, so the mouth opens wherever there is audio."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.4 * np.sin(2 * np.pi * pitch_hz * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (wave * 32767).astype("<i2").tobytes()


def chunks_of(
    texts: list[str], turn: str = "t1", session: str = "s1", expressions: list[str] | None = None
) -> list[TtsChunk]:
    """A turn's chunks: 0.4, 0.5, 0.6... s of audio, the last one final."""
    return [
        TtsChunk(
            session_id=session, turn_id=turn, seq=n, index=n, final=n == len(texts) - 1,
            text=text, sample_rate=RATE, pcm=voice(0.4 + n / 10),
            expressions=(expressions or []) if n == 0 else [],
        )
        for n, text in enumerate(texts)
    ]  # fmt: skip


def interrupt(turn: str, session: str = "s1", seq: int = 0) -> Control:
    return Control(
        session_id=session, message_id=f"barge:{seq}", seq=seq,
        command=Interrupt(target_turn_id=turn),
    )  # fmt: skip


def harness(settings: AvatarSettings | None = None) -> StageHarness[AvatarStage]:
    return StageHarness(lambda bus: AvatarStage(settings or AvatarSettings(), bus))


def expressions(published: list[Any]) -> list[AvatarExpr]:
    assert all(isinstance(m, AvatarExpr) for m in published)
    return list(published)


def content(message: Envelope) -> dict[str, Any]:
    """What a message says, without when it was made (a copy made again differs there)."""
    return message.model_dump(exclude={"created_at"})


async def test_each_chunk_moves_the_mouth_once_and_the_turn_ends_idle() -> None:
    avatar = harness()
    chunks = chunks_of(TEXTS, expressions=["happy"])
    out = expressions(await avatar.send(*chunks))

    speaking, idle = out[:-1], out[-1]
    assert [e.state for e in speaking] == ["speaking"] * len(chunks)
    assert [e.seq for e in out] == [0, 2, 4, 5], "2 x index, and the idle after the last"
    assert {e.turn_id for e in out} == {"t1"}
    starts = np.cumsum([0.0] + [c.duration_s for c in chunks])
    assert [e.offset_s for e in speaking] == pytest.approx(starts[:-1].tolist())
    for expr, chunk in zip(speaking, chunks, strict=True):
        assert len(expr.mouth_open) == int(np.ceil(chunk.duration_s * expr.fps))
        assert max(expr.mouth_open) > 0.5, "a loud voice opens the mouth"
    assert (idle.state, idle.mouth_open) == ("idle", [])
    assert idle.offset_s == pytest.approx(starts[-1]), "idle where the turn's audio ends"
    assert [e.expression for e in out] == ["happy"] * 4, "the expression holds for the turn"


async def test_the_expression_holds_across_turns_until_a_chunk_names_another() -> None:
    avatar = harness()
    await avatar.send(*chunks_of(TEXTS[:1], turn="t1", expressions=["sad"]))
    await avatar.send(*chunks_of(TEXTS[:2], turn="t2"))
    await avatar.send(*chunks_of(TEXTS[:1], turn="t3", expressions=["happy"]))
    by_turn = [(e.turn_id, e.expression) for e in expressions(avatar.published(AVATAR_EXPR))]
    assert by_turn == [
        ("t1", "sad"), ("t1", "sad"),
        ("t2", "sad"), ("t2", "sad"), ("t2", "sad"),
        ("t3", "happy"), ("t3", "happy"),
    ]  # fmt: skip


async def test_sessions_keep_their_own_expression() -> None:
    avatar = harness()
    await avatar.send(*chunks_of(TEXTS[:1], session="a", expressions=["sad"]))
    await avatar.send(*chunks_of(TEXTS[:1], session="b", expressions=["happy"]))
    await avatar.send(*chunks_of(TEXTS[:1], session="a", turn="t2"))
    last = expressions(avatar.published(AVATAR_EXPR))[-1]
    assert (last.session_id, last.expression) == ("a", "sad")


async def test_a_final_chunk_without_audio_only_closes_the_mouth() -> None:
    avatar = harness()
    first, _ = chunks_of(TEXTS[:2])
    empty = TtsChunk(
        session_id="s1", turn_id="t1", seq=1, index=1, final=True, text="", sample_rate=RATE,
        pcm=b"",
    )  # fmt: skip
    out = expressions(await avatar.send(first, empty))
    assert [(e.state, e.seq) for e in out] == [("speaking", 0), ("idle", 3)]
    assert out[-1].offset_s == pytest.approx(first.duration_s)


async def test_a_redelivered_chunk_does_not_move_the_mouth_again() -> None:
    avatar = harness()
    chunks = chunks_of(TEXTS)
    await avatar.send(chunks[0], chunks[1])
    await avatar.send(chunks[0], chunks[1], chunks[2])
    seqs = [e.seq for e in expressions(avatar.published(AVATAR_EXPR))]
    assert seqs == [0, 2, 4, 5]


async def test_an_interrupt_shuts_the_mouth_and_the_turn_moves_it_no_more() -> None:
    avatar = harness()
    chunks = chunks_of(TEXTS, expressions=["happy"])
    await avatar.send(chunks[0])
    out = expressions(await avatar.send(interrupt("t1"), *chunks[1:]))
    assert len(out) == 1, "the turn's later chunks are dropped"
    (closed,) = out
    assert (closed.state, closed.turn_id, closed.seq) == ("idle", "t1", INTERRUPTED_SEQ)
    assert closed.expression == "happy"
    assert closed.seq > 2 * len(chunks) + 1, "after anything the turn could have published"
    assert await avatar.stage.mouths.load("s1", "t1") is None


async def test_an_interrupt_of_a_turn_not_speaking_here_publishes_nothing() -> None:
    avatar = harness()
    await avatar.send(*chunks_of(TEXTS[:1], turn="done"))  # over: its mouth is shut already
    assert await avatar.send(interrupt("done"), interrupt("never-spoke", seq=1)) == []


async def test_an_interrupt_is_handled_once_though_every_replica_sends_it() -> None:
    avatar = harness()
    await avatar.send(chunks_of(TEXTS)[0])
    out = await avatar.send(interrupt("t1"), interrupt("t1"), interrupt("t1", seq=1))
    assert len(out) == 1


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
async def test_a_crash_mid_turn_moves_the_mouth_once_per_chunk_and_ends_idle_once(
    crash_at: int,
) -> None:
    chunks = chunks_of(TEXTS, expressions=["happy"])
    expected = [content(e) for e in await harness().send(*chunks)]

    avatar = harness()
    avatar.crash_after(publishes=crash_at)
    with pytest.raises(SimulatedCrash):
        await avatar.send(*chunks)
    await avatar.restart()
    await avatar.send(*chunks)  # the producer's retries: duplicates included
    published = expressions(avatar.published(AVATAR_EXPR))

    # A consumer keeps the first of each message id; a copy made again must say the same.
    first: dict[str, dict[str, Any]] = {}
    for expr in published:
        again = first.setdefault(expr.message_id, content(expr))
        assert content(expr) == again, f"{expr.message_id} made again differs"
    assert list(first.values()) == expected, "every chunk moved once, in order, idle once"


async def test_blinks_count_from_0_per_session_under_an_origin_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: 0.0)  # blinks without waiting
    avatar = harness()
    await avatar.send(*chunks_of(TEXTS[:1], session="a", expressions=["sad"]))
    await avatar.send(*chunks_of(TEXTS[:1], session="b"))
    before = len(avatar.published(AVATAR_EXPR))
    blinking = asyncio.create_task(avatar.stage.background())
    for _ in range(10_000):  # a few turns of the loop: blinks do not wait here
        if len(avatar.published(AVATAR_EXPR)) >= before + 6:
            break
        await asyncio.sleep(0)
    blinking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blinking
    blinks = [e for e in expressions(avatar.published(AVATAR_EXPR))[before:] if e.state == "blink"]
    assert len(blinks) >= 6
    for session, expression in (("a", "sad"), ("b", "neutral")):
        mine = [e for e in blinks if e.session_id == session]
        assert [e.seq for e in mine] == list(range(len(mine)))
        assert {e.origin for e in mine} == {avatar.stage.blink_origin}
        assert {(e.turn_id, e.expression) for e in mine} == {(None, expression)}
    assert avatar.stage.blink_origin.startswith(f"blink-{avatar.bus.replica_id}-")
