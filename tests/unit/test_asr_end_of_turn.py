"""asr's end of turn, in memory: the real VAD and endpointer on the sample conversation,
a recognizer that knows its words, and an end-of-turn model the test sets.

Frames are sent one at a time and each pause's transcript and decision are let finish
before the next frame, as they would in real time (20 ms a frame, a decision in ~150 ms).
"""

import asyncio

import pytest

from contracts import AsrFinal, Control, Interrupt, SpeechEvent
from contracts.topics import ASR_FINAL, ASR_SPEECH, CONTROL
from contracts.turns import SUPERSEDED
from services.asr.settings import AsrSettings
from services.asr.stage import AsrStage
from services.bus.harness import StageHarness
from tests.unit.test_asr_stage import QUESTIONS, RATE, SAMPLE, SampleRecognizer, frames_of


class FixedTurnModel:
    """An end-of-turn model that always says the same (the real one is tested on real
    audio in test_turn_model.py); records the audio it was asked about."""

    def __init__(self, probability: float) -> None:
        self.value = probability
        self.asked: list[bytes] = []

    def probability(self, pcm: bytes) -> float:
        self.asked.append(pcm)
        return self.value


def harness(turn_model: FixedTurnModel | None, **overrides: object) -> StageHarness[AsrStage]:
    # The sample has a 0.1 s gap inside its first question ("how | are you"): a model
    # that always says "finished" would make a turn of it at a 100 ms pause.
    defaults = {"partial_interval_ms": 600_000, "speculate_after_ms": 150}
    settings = AsrSettings(**{**defaults, **overrides})  # type: ignore[arg-type]
    return StageHarness(lambda bus: AsrStage(settings, SampleRecognizer(), bus, turn_model))


async def send_in_time(asr: StageHarness[AsrStage], pcm: bytes) -> list[int]:
    """Send frames one by one, letting each pause's work finish before the next frame;
    returns, per frame, how many messages asr had published after it."""
    counts = []
    for frame in frames_of(pcm):
        await asr.send(frame)
        listener = asr.stage.listeners["s1"]
        speculation = listener.speculation if listener is not None else None
        if speculation is not None:
            await asyncio.wait_for(asyncio.shield(speculation.task), 5)
            await asyncio.sleep(0)
        counts.append(len(asr.published()))
    return counts


def finals(asr: StageHarness[AsrStage]) -> list[AsrFinal]:
    return asr.published(ASR_FINAL)


def ends(asr: StageHarness[AsrStage]) -> list[SpeechEvent]:
    return [e for e in asr.published(ASR_SPEECH) if e.state == "end"]


async def test_a_turn_that_sounds_finished_is_published_at_the_pause_and_ended_soon() -> None:
    model = FixedTurnModel(0.9)
    asr = harness(model, finished_silence_ms=400, unfinished_silence_ms=3000)
    await send_in_time(asr, SAMPLE)

    heard = finals(asr)
    assert [f.text for f in heard] == [q[2] for q in QUESTIONS]
    assert all(f.preemptive for f in heard), "out before the end of turn was certain"
    published = asr.published()
    for final, end in zip(heard, ends(asr), strict=True):
        assert end.turn_id == final.turn_id
        assert published.index(final) < published.index(end), "the reply can start early"
    assert model.asked, "the model heard each pause"
    # The end of turn came after 400 ms of silence, not 3 s: the first question ends at
    # 2.56 s and the second starts at 4.24 s, so a 3 s wait would have merged them.
    assert len(heard) == 2
    assert asr.stored.unacknowledged == [], "the end of turn acknowledged every frame"


async def test_a_turn_that_sounds_unfinished_waits_longer_and_is_not_preemptive() -> None:
    model = FixedTurnModel(0.02)
    asr = harness(model, finished_silence_ms=300, unfinished_silence_ms=1200)
    await send_in_time(asr, SAMPLE)
    heard = finals(asr)
    assert [f.text for f in heard] == [q[2] for q in QUESTIONS]
    assert not any(f.preemptive for f in heard), "no reply prepared for an unfinished turn"
    first_end = ends(asr)[0]
    # It ended 1.2 s after the speech (not 0.3 s): the second question starts 1.7 s later.
    published = asr.published()
    assert published.index(first_end) < published.index(heard[0])


async def test_a_pause_that_only_sounds_final_splits_nothing() -> None:
    """The user pauses 0.9 s mid-turn: judged unfinished, the turn waits; the two parts
    are one turn."""
    model = FixedTurnModel(0.02)
    asr = harness(model, finished_silence_ms=300, unfinished_silence_ms=1500)
    first, second = QUESTIONS
    pcm = SAMPLE[: int((first[1] + 0.3) * RATE) * 2]
    pcm += bytes(int(0.6 * RATE) * 2)
    pcm += SAMPLE[int((second[0] - 0.2) * RATE) * 2 :]
    await send_in_time(asr, pcm)
    (final,) = finals(asr)
    assert final.text == f"{first[2]} {second[2]}"


async def test_the_user_going_on_supersedes_the_preemptive_turn() -> None:
    """Judged finished at the pause, the turn goes out; the user then goes on: that turn
    is dropped by an Interrupt (superseded) and the whole utterance is the next turn."""
    model = FixedTurnModel(0.9)
    asr = harness(model, finished_silence_ms=1200, unfinished_silence_ms=3000)
    first, second = QUESTIONS
    pcm = SAMPLE[: int((first[1] + 0.3) * RATE) * 2]
    pcm += bytes(int(0.4 * RATE) * 2)
    pcm += SAMPLE[int((second[0] - 0.2) * RATE) * 2 :]
    await send_in_time(asr, pcm)

    dropped, kept = finals(asr)
    assert (dropped.text, dropped.preemptive) == (first[2], True)
    assert kept.text == f"{first[2]} {second[2]}", "all the user's words, in one turn"
    assert kept.turn_id == f"{dropped.turn_id}-1"
    (control,) = asr.published(CONTROL)
    assert isinstance(control, Control)
    assert control.command == Interrupt(target_turn_id=dropped.turn_id or "", reason=SUPERSEDED)
    starts = [e.turn_id for e in asr.published(ASR_SPEECH) if e.state == "start"]
    assert starts == [dropped.turn_id, kept.turn_id], "the floor is the new turn's"
    assert [e.turn_id for e in ends(asr)] == [kept.turn_id], "only the kept turn ends"
    published = asr.published()
    assert published.index(dropped) < published.index(control) < published.index(kept)


@pytest.mark.parametrize("preemptive", [True, False])
async def test_silence_alone_still_works_and_preemption_can_be_off(preemptive: bool) -> None:
    asr = harness(None, end_silence_ms=600, preemptive=preemptive)
    await send_in_time(asr, SAMPLE)
    heard = finals(asr)
    assert [f.text for f in heard] == [q[2] for q in QUESTIONS]
    assert all(f.preemptive == preemptive for f in heard)
