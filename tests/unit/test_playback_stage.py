"""playback in memory: block by block, in order, once; pauses, interrupts and crashes."""

import asyncio
from pathlib import Path

import numpy as np
import pytest

from contracts import Control, Interrupt, Pause, PlaybackProgress, SpeechEvent, TtsChunk
from contracts.topics import PLAYBACK_PROGRESS
from services.bus.harness import SimulatedCrash, StageHarness
from services.playback.settings import PlaybackSettings
from services.playback.stage import CHECKPOINT_S, PlaybackStage
from tests.unit.hold import Hold

RATE = 16_000
BLOCK_MS = 20
BLOCK_BYTES = RATE * 2 * BLOCK_MS // 1000
TEXTS = ["Hello there, my friend!", "The weather is lovely today.", "Shall we play chess?"]
Key = tuple[str, str]


class Output:
    """What was played, a WAV file per turn as WavSink writes them; it outlives a replica.

    `hold.after(n)` holds the write of block n + 1 until `hold.release()` (playback is then in
    the middle of a chunk); `crash_at_block` makes the replica die as it plays that block.
    """

    def __init__(self) -> None:
        self.audio: dict[Key, bytearray] = {}
        self.rates: dict[Key, int] = {}
        self.blocks: list[tuple[Key, int]] = []
        self.ended: list[Key] = []
        self.resumed: list[tuple[Key, float]] = []
        self.crash_at_block: int | None = None
        self.hold = Hold()

    def played(self, session: str = "s1", turn: str = "t1") -> bytes:
        return bytes(self.audio.get((session, turn), b""))

    async def before_block(self) -> None:
        number = len(self.blocks) + 1
        if self.crash_at_block == number:
            self.crash_at_block = None
            raise SimulatedCrash(f"died playing block {number}")
        await self.hold.point(done=number - 1)


class MemorySink:
    """One replica's AudioSink (realtime off): like WavSink, a turn it has not opened starts
    afresh, and `resume_turn` keeps the first played_s seconds of a turn begun by a replica
    that died."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self._open: set[Key] = set()

    async def write(self, session: str, turn: str, pcm: bytes, sample_rate: int) -> None:
        output, key = self.output, (session, turn)
        await output.before_block()
        if key not in self._open:
            self._open.add(key)
            output.audio[key], output.rates[key] = bytearray(), sample_rate
        output.audio[key].extend(pcm)
        output.blocks.append((key, len(pcm)))
        await asyncio.sleep(0)  # a real output lets others run between blocks

    def end_turn(self, session: str, turn: str) -> Path | None:
        self._open.discard((session, turn))
        self.output.ended.append((session, turn))
        return None

    def resume_turn(self, session: str, turn: str, played_s: float) -> None:
        output, key = self.output, (session, turn)
        output.resumed.append((key, played_s))
        if key in self._open or key not in output.audio:
            return
        self._open.add(key)
        del output.audio[key][round(played_s * output.rates[key]) * 2 :]


def tone(seconds: float, level: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()


def chunks_of(
    texts: list[str], turn: str = "t1", session: str = "s1", seconds: float = 0.3
) -> list[TtsChunk]:
    """A turn's chunks, each `seconds` long and of its own loudness, the last final."""
    return [
        TtsChunk(
            session_id=session, turn_id=turn, seq=n, index=n, final=n == len(texts) - 1,
            text=text, sample_rate=RATE, pcm=tone(seconds, 0.2 + 0.2 * n),
        )
        for n, text in enumerate(texts)
    ]  # fmt: skip


def control(command: Interrupt | Pause, seq: int = 0, session: str = "s1") -> Control:
    return Control(session_id=session, message_id=f"panel:{seq}", seq=seq, command=command)


def harness(output: Output, **settings: float | bool) -> StageHarness[PlaybackStage]:
    configured = PlaybackSettings(realtime=False, block_ms=BLOCK_MS, **settings)  # type: ignore[arg-type]
    return StageHarness(lambda bus: PlaybackStage(configured, MemorySink(output), bus))


def reports(messages: list[PlaybackProgress]) -> list[tuple[int, str]]:
    return [(p.chunk_index, p.state) for p in messages]


def progress_of(playback: StageHarness[PlaybackStage]) -> list[PlaybackProgress]:
    published = playback.published(PLAYBACK_PROGRESS)
    assert all(isinstance(p, PlaybackProgress) for p in published)
    return published


async def reported(playback: StageHarness[PlaybackStage], state: str) -> None:
    for _ in range(10_000):
        if any(p.state == state for p in progress_of(playback)):
            return
        await asyncio.sleep(0)
    raise AssertionError(f"playback never reported {state!r}")


async def test_a_reply_is_played_in_order_in_short_blocks_and_finishes_once() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS)
    await playback.send(*chunks)

    assert output.played() == b"".join(c.pcm for c in chunks), "every sample once, in order"
    assert {size for _, size in output.blocks} == {BLOCK_BYTES}, "20 ms at a time"
    assert output.ended == [("s1", "t1")]
    progress = progress_of(playback)
    assert reports(progress) == [(0, "playing"), (1, "playing"), (2, "playing"), (2, "finished")]
    assert [p.seq for p in progress] == list(range(len(progress)))
    assert {p.turn_id for p in progress} == {"t1"}
    total = sum(c.duration_s for c in chunks)
    assert progress[-1].played_s == pytest.approx(total, abs=0.001)
    levels = [p.level_dbfs for p in progress[:-1] if p.level_dbfs is not None]
    assert len(levels) == len(progress) - 1, "a playing report says how loud"
    assert levels == sorted(levels), "each chunk's loudest 20 ms (they get louder)"
    assert progress[-1].heard_text is None


async def test_turns_and_sessions_are_played_each_to_their_own_output() -> None:
    output = Output()
    playback = harness(output)
    first, second = chunks_of(TEXTS[:2], turn="t1"), chunks_of(TEXTS[:1], session="s2")
    await playback.send(first[0], second[0], first[1])
    assert output.played("s1", "t1") == first[0].pcm + first[1].pcm
    assert output.played("s2", "t1") == second[0].pcm
    assert sorted(output.ended) == [("s1", "t1"), ("s2", "t1")]


async def test_a_redelivered_chunk_is_not_played_twice() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS)
    await playback.send(chunks[0], chunks[0], chunks[1], chunks[0], chunks[2])
    assert output.played() == b"".join(c.pcm for c in chunks)
    assert [s for _, s in reports(progress_of(playback))].count("finished") == 1


async def test_a_missing_chunk_is_skipped_not_waited_for() -> None:
    """No jitter buffer any more: the runtime keeps a session's chunks in order, so a gap
    means the chunk is lost (dead-lettered); playback goes on rather than stall the turn."""
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS)
    await playback.send(chunks[0], chunks[2])
    assert output.played() == chunks[0].pcm + chunks[2].pcm
    assert reports(progress_of(playback))[-1] == (2, "finished")
    await playback.send(chunks[1])  # too late: never played out of order
    assert output.played() == chunks[0].pcm + chunks[2].pcm


async def test_an_interrupt_between_chunks_flushes_the_turn_with_what_was_heard() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS)
    await playback.send(chunks[0])
    out = await playback.send(control(Interrupt(target_turn_id="t1")), *chunks[1:])
    assert output.played() == chunks[0].pcm, "nothing more of the turn is played"
    (flushed,) = out
    assert isinstance(flushed, PlaybackProgress)
    assert (flushed.chunk_index, flushed.state) == (0, "flushed")
    assert flushed.heard_text == TEXTS[0]
    assert flushed.played_s == pytest.approx(chunks[0].duration_s, abs=0.001)
    assert output.ended == [("s1", "t1")]
    assert await playback.stage.positions.load("s1", "t1") is None


async def test_an_interrupt_mid_chunk_stops_within_a_block_and_cuts_the_heard_text() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS, seconds=1.0)  # 50 blocks a chunk
    await playback.send(chunks[0])
    output.hold.after(50 + 25)  # half of the second chunk
    playing = asyncio.create_task(playback.send(*chunks[1:]))
    await output.hold.holding()
    await playback.send(control(Interrupt(target_turn_id="t1")))
    output.hold.release()
    await asyncio.wait_for(playing, 5)
    assert len(output.blocks) <= 50 + 25 + 1, "it stops within one block"
    last = progress_of(playback)[-1]
    assert (last.chunk_index, last.state) == (1, "flushed")
    assert last.played_s == pytest.approx(1.5, abs=0.05)
    # No phoneme timings (a steady tone): the words share the chunk's sound by their
    # length, and half of "is" has played at 0.48 of it.
    assert last.heard_text == f"{TEXTS[0]} The weather is"
    assert "finished" not in [p.state for p in progress_of(playback)]
    assert output.ended == [("s1", "t1")]


async def pause_mid_chunk(
    output: Output, playback: StageHarness[PlaybackStage], chunks: list[TtsChunk]
) -> "asyncio.Task[list[object]]":
    """Play the chunks and pause the turn five blocks in; returns the playing task."""
    output.hold.after(5)
    playing = asyncio.create_task(playback.send(*chunks))
    await output.hold.holding()
    await playback.send(control(Pause(target_turn_id="t1")))
    output.hold.release()
    await reported(playback, "paused")
    return playing  # type: ignore[return-value]


async def test_a_pause_holds_the_turn_where_it_is_and_it_goes_on_from_there() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS, seconds=0.5)
    playing = await pause_mid_chunk(output, playback, chunks)
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(output.blocks) == 6, "quiet after the block in hand"
    await playback.send(control(Pause(target_turn_id="t1", paused=False), seq=1))
    await asyncio.wait_for(playing, 5)
    assert output.played() == b"".join(c.pcm for c in chunks), "nothing lost or repeated"
    assert reports(progress_of(playback)) == [
        (0, "playing"), (0, "paused"), (0, "playing"), (1, "playing"), (2, "playing"),
        (2, "finished"),
    ]  # fmt: skip
    paused = progress_of(playback)[1]
    assert paused.played_s == pytest.approx(6 * BLOCK_MS / 1000)


async def test_a_pause_nobody_lifts_ends_by_itself() -> None:
    output = Output()
    playback = harness(output, max_pause_s=0.05)
    chunks = chunks_of(TEXTS[:1])
    playing = await pause_mid_chunk(output, playback, chunks)
    await asyncio.wait_for(playing, 5)
    assert output.played() == chunks[0].pcm
    assert reports(progress_of(playback)) == [
        (0, "playing"), (0, "paused"), (0, "playing"), (0, "finished"),
    ]  # fmt: skip


async def test_an_interrupt_ends_a_paused_turn() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS, seconds=0.5)
    playing = await pause_mid_chunk(output, playback, chunks)
    await playback.send(control(Interrupt(target_turn_id="t1"), seq=1))
    await asyncio.wait_for(playing, 5)
    assert [p.state for p in progress_of(playback)] == ["playing", "paused", "flushed"]
    assert len(output.played()) == 6 * BLOCK_BYTES


async def test_a_pause_of_another_turn_changes_nothing() -> None:
    output = Output()
    playback = harness(output)
    await playback.send(control(Pause(target_turn_id="other")))
    await playback.send(*chunks_of(TEXTS))
    assert [s for _, s in reports(progress_of(playback))] == ["playing"] * 3 + ["finished"]


def assert_played_once_and_finished_once(
    output: Output, playback: StageHarness[PlaybackStage], chunks: list[TtsChunk]
) -> None:
    assert output.played() == b"".join(c.pcm for c in chunks), "every sample once, in order"
    progress = progress_of(playback)
    finished = [p for p in progress if p.state == "finished"]
    assert len(finished) == 1
    assert finished[0].played_s == pytest.approx(sum(c.duration_s for c in chunks), abs=0.001)
    # A report's number is stored with it: the replacement numbers on, none twice.
    assert [p.seq for p in progress] == list(range(len(progress)))


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
async def test_a_crash_at_a_report_plays_every_sample_once(crash_at: int) -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS, seconds=0.6)
    playback.crash_after(publishes=crash_at)
    with pytest.raises(SimulatedCrash):
        await playback.send(*chunks)
    await playback.restart()
    await playback.send(*chunks)  # the producer's retries: duplicates included
    assert_played_once_and_finished_once(output, playback, chunks)


@pytest.mark.parametrize("block", [3, 14, 30, 31, 45, 90])
async def test_a_crash_while_playing_goes_on_from_the_last_checkpoint(block: int) -> None:
    """Dying mid-chunk: up to a quarter second after the checkpoint was played, and the
    replacement cuts the output back to the checkpoint and plays on from there."""
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS, seconds=0.6)  # 30 blocks a chunk
    output.crash_at_block = block
    with pytest.raises(SimulatedCrash):
        await playback.send(*chunks)
    await playback.restart()
    await playback.send(*chunks)
    assert_played_once_and_finished_once(output, playback, chunks)
    played_s = (block - 1) * BLOCK_MS / 1000
    resumed_at = dict(output.resumed).get(("s1", "t1"), 0.0)
    assert -1e-9 <= played_s - resumed_at <= CHECKPOINT_S + BLOCK_MS / 1000, "heard twice at most"


def speech(state: str, turn: str = "u1", session: str = "s1") -> SpeechEvent:
    return SpeechEvent(
        session_id=session, turn_id=turn, seq=0 if state == "start" else 1,
        state=state, at_s=1.0,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_a_reply_waits_for_the_user_to_stop_talking() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS)
    await playback.send(speech("start"))
    playing = asyncio.create_task(playback.send(*chunks))
    for _ in range(200):
        await asyncio.sleep(0)
    assert output.played() == b"", "it does not start talking over the user"
    assert progress_of(playback) == []
    await playback.send(speech("end"))
    await asyncio.wait_for(playing, 5)
    assert output.played() == b"".join(c.pcm for c in chunks)
    assert reports(progress_of(playback))[0] == (0, "playing")


async def test_a_reply_interrupted_while_it_waits_for_the_user_is_flushed_unplayed() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS)
    await playback.send(speech("start"))
    waiting = asyncio.create_task(playback.send(chunks[0]))
    for _ in range(200):
        await asyncio.sleep(0)
    await playback.send(control(Interrupt(target_turn_id="t1")))
    await playback.send(speech("end"))
    await asyncio.wait_for(waiting, 5)
    await playback.send(*chunks[1:])
    assert output.played() == b""
    assert reports(progress_of(playback)) == [(0, "flushed")]
    assert progress_of(playback)[0].heard_text == ""


async def test_a_user_who_talks_on_and_on_gets_the_reply_anyway() -> None:
    output = Output()
    playback = harness(output, wait_for_user_s=0.05)
    await playback.send(speech("start"))
    await asyncio.wait_for(playback.send(*chunks_of(TEXTS[:1])), 5)
    assert output.played() == chunks_of(TEXTS[:1])[0].pcm


async def test_a_reply_under_way_does_not_wait_for_the_user() -> None:
    """Talking over a reply already playing is barge-in (asr pauses it), not turn-taking."""
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS)
    await playback.send(chunks[0], speech("start"), *chunks[1:])
    assert output.played() == b"".join(c.pcm for c in chunks)


async def test_playing_reports_say_how_much_of_the_chunk_is_left() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS, seconds=0.5)
    playing = await pause_mid_chunk(output, playback, chunks)
    await playback.send(control(Pause(target_turn_id="t1", paused=False), seq=1))
    await asyncio.wait_for(playing, 5)
    left = [(p.chunk_index, p.remaining_s) for p in progress_of(playback) if p.state == "playing"]
    after_pause = 0.5 - 6 * BLOCK_MS / 1000
    assert left == [(0, 0.5), (0, pytest.approx(after_pause)), (1, 0.5), (2, 0.5)]


async def test_a_pause_between_chunks_is_reported_at_once() -> None:
    """The next chunk is late (tts behind): a pause now must say the character is quiet."""
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS)
    await playback.send(chunks[0])
    await playback.send(control(Pause(target_turn_id="t1")))
    assert reports(progress_of(playback))[-1] == (0, "paused")
    playing = asyncio.create_task(playback.send(*chunks[1:]))
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(output.played()) == len(chunks[0].pcm), "the late chunk waits for go on"
    await playback.send(control(Pause(target_turn_id="t1", paused=False), seq=1))
    await asyncio.wait_for(playing, 5)
    assert reports(progress_of(playback)) == [
        (0, "playing"), (0, "paused"), (1, "playing"), (2, "playing"), (2, "finished"),
    ]  # fmt: skip


async def test_a_pause_after_a_lifted_pause_between_chunks_is_reported_too() -> None:
    output = Output()
    playback = harness(output)
    chunks = chunks_of(TEXTS, seconds=0.5)  # 25 blocks a chunk
    await playback.send(chunks[0])
    await playback.send(control(Pause(target_turn_id="t1")))  # between chunks: reported
    await playback.send(control(Pause(target_turn_id="t1", paused=False), seq=1))
    output.hold.after(25 + 5)
    playing = asyncio.create_task(playback.send(*chunks[1:]))
    await output.hold.holding()
    await playback.send(control(Pause(target_turn_id="t1"), seq=2))  # mid-chunk this time
    output.hold.release()
    await reported_times(playback, "paused", 2)
    await playback.send(control(Pause(target_turn_id="t1", paused=False), seq=3))
    await asyncio.wait_for(playing, 5)
    assert reports(progress_of(playback)) == [
        (0, "playing"), (0, "paused"), (1, "playing"), (1, "paused"), (1, "playing"),
        (2, "playing"), (2, "finished"),
    ]  # fmt: skip


async def reported_times(playback: StageHarness[PlaybackStage], state: str, times: int) -> None:
    for _ in range(10_000):
        if sum(p.state == state for p in progress_of(playback)) >= times:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"playback reported {state!r} fewer than {times} times")
