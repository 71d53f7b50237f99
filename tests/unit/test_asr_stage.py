"""asr in memory: the bundled sample conversation through the real VAD and endpointer, with
a recognizer that knows the sample's words; finals, barge-in, held frames and crashes."""

import asyncio
import wave
from typing import Any

import pytest

from contracts import (
    AsrFinal,
    AsrPartial,
    AudioFrame,
    Control,
    Envelope,
    Interrupt,
    Pause,
    PlaybackProgress,
    SpeechEvent,
)
from contracts.topics import ASR_FINAL, ASR_PARTIAL, ASR_SPEECH, CONTROL
from services.asr.recognizer import Transcript
from services.asr.settings import AsrSettings
from services.asr.stage import AsrStage
from services.bus.harness import SimulatedCrash, StageHarness
from services.capture.stage import SAMPLE_CONVERSATION

RATE = 16_000
FRAME_BYTES = RATE * 2 * 20 // 1000
CAPTURED_AT = 1_760_000_000.0
QUESTIONS = (
    # (speech start s, speech end s, words): where the sample says them
    (0.56, 2.56, "Hello Marionette, how are you today?"),
    (4.24, 5.94, "What is the capital of France?"),
)


def sample_pcm() -> bytes:
    with wave.open(str(SAMPLE_CONVERSATION)) as sample:
        assert (sample.getframerate(), sample.getnchannels()) == (RATE, 1)
        return bytes(sample.readframes(sample.getnframes()))


SAMPLE = sample_pcm()


class SampleRecognizer:
    """Hears the sample's words: a word is in the audio when a 20 ms piece of the sample
    from where it is said is (the sample's pauses are digital silence, so each piece of
    speech is found only where it was said)."""

    def __init__(self) -> None:
        self.words: list[tuple[bytes, str]] = []
        for start_s, end_s, text in QUESTIONS:
            said = text.split()
            step = (end_s - start_s) / len(said)
            for n, word in enumerate(said):
                at = int((start_s + (n + 0.5) * step) * RATE) * 2
                self.words.append((SAMPLE[at : at + FRAME_BYTES], word))
        self.heard: list[str] = []

    def transcribe(self, pcm: bytes) -> Transcript:
        text = " ".join(word for piece, word in self.words if piece in pcm)
        self.heard.append(text)
        return Transcript(text, "en", 0.9 if text else 0.0)


def frames_of(
    pcm: bytes, run: str = "run1", session: str = "s1", *, end: bool = True
) -> list[AudioFrame]:
    """20 ms frames numbered from 0 in their capture run; the last ends the input."""
    pcm += bytes(-len(pcm) % FRAME_BYTES)
    count = len(pcm) // FRAME_BYTES
    return [
        AudioFrame(
            session_id=session, message_id=f"{run}:{n}", seq=n,
            pcm=pcm[n * FRAME_BYTES : (n + 1) * FRAME_BYTES], captured_at=CAPTURED_AT + n * 0.02,
            end_of_input=end and n == count - 1,
        )
        for n in range(count)
    ]  # fmt: skip


def harness(recognizer: SampleRecognizer | None = None, **overrides: Any) -> StageHarness[AsrStage]:
    # No interim transcripts unless a test asks: they come from background tasks.
    configured = AsrSettings(**{"partial_interval_ms": 600_000, **overrides})
    heard = recognizer or SampleRecognizer()
    return StageHarness(lambda bus: AsrStage(configured, heard, bus))


def finals(asr: StageHarness[AsrStage]) -> list[AsrFinal]:
    return asr.published(ASR_FINAL)


def once_each(messages: list[AsrFinal]) -> list[AsrFinal]:
    """As a consumer sees them: a copy (same message id, made again after a crash) is
    dropped."""
    return list({m.message_id: m for m in messages}.values())


def controls(asr: StageHarness[AsrStage]) -> list[Control]:
    return asr.published(CONTROL)


def content(message: Envelope) -> dict[str, Any]:
    """What a copy must repeat. Whether a final went out before its end of turn
    (preemptive) depends on how fast the frames came, not on them: a replica hearing
    them again after a crash gets them at once, and may reach the end of turn first."""
    return message.model_dump(exclude={"created_at", "preemptive"})


MEASURED = bytes(RATE * 2)
"""A second of the character talking with nobody else: asr measures its echo (none here)."""


def playing(level_dbfs: float, turn: str = "r1") -> PlaybackProgress:
    return PlaybackProgress(
        session_id="s1", turn_id=turn, seq=0, chunk_index=0, played_s=0.5, state="playing",
        level_dbfs=level_dbfs,
    )  # fmt: skip


async def test_two_questions_give_two_finals_each_inside_its_speech_events() -> None:
    asr = harness()
    await asr.send(*frames_of(SAMPLE))

    heard = finals(asr)
    assert [f.text for f in heard] == [text for _, _, text in QUESTIONS]
    for final, (start_s, end_s, _) in zip(heard, QUESTIONS, strict=True):
        assert final.speech_start_s == pytest.approx(start_s, abs=0.1)
        assert final.speech_end_s == pytest.approx(end_s, abs=0.1)
        assert (final.language, final.confidence, final.seq) == ("en", 0.9, 0)
        assert (final.turn_id or "").startswith("run1.u")
    assert heard[0].turn_id != heard[1].turn_id

    published = asr.published()
    for final in heard:
        start, end = [e for e in asr.published(ASR_SPEECH) if e.turn_id == final.turn_id]
        assert isinstance(start, SpeechEvent)
        assert isinstance(end, SpeechEvent)
        assert [(start.state, start.seq), (end.state, end.seq)] == [("start", 0), ("end", 1)]
        assert start.at_s == pytest.approx(final.speech_start_s)
        assert end.at_s == pytest.approx(final.speech_end_s)
        assert published.index(start) < published.index(end) < published.index(final)
    assert controls(asr) == [], "nobody talked over the character"
    assert asr.stored.unacknowledged == [], "the input ended: every frame is acknowledged"


async def test_turns_are_named_from_the_audio_so_a_replay_names_them_again() -> None:
    first, again, other_run = harness(), harness(), harness()
    await first.send(*frames_of(SAMPLE))
    await again.send(*frames_of(SAMPLE))
    await other_run.send(*frames_of(SAMPLE, run="run2"))
    turns = [f.turn_id for f in finals(first)]
    assert [f.turn_id for f in finals(again)] == turns
    assert [f.turn_id for f in finals(other_run)] == [
        t.replace("run1.", "run2.") for t in turns if t
    ], "a new capture run has turns of its own"


async def test_frames_delivered_again_are_heard_once() -> None:
    asr = harness()
    frames = frames_of(SAMPLE)
    await asr.send(*frames)
    assert await asr.send(*frames) == []
    assert len(finals(asr)) == 2


async def test_interim_transcripts_come_in_order_before_their_final() -> None:
    recognizer = SampleRecognizer()
    asr = harness(recognizer, partial_interval_ms=400)
    for frame in frames_of(SAMPLE):
        await asr.send(frame)
        await asyncio.sleep(0.001)  # frames take time to come: transcripts run meanwhile
    partials: list[AsrPartial] = asr.published(ASR_PARTIAL)
    assert partials, "a two-second question gets interim transcripts"
    published = asr.published()
    for final in finals(asr):
        mine = [p for p in partials if p.turn_id == final.turn_id]
        assert [p.seq for p in mine] == list(range(len(mine))), "partials in order"
        assert all(published.index(p) < published.index(final) for p in mine)
        assert all(final.text.startswith(p.text) for p in mine), "the words so far"
        assert all(p.speech_start_s == final.speech_start_s for p in mine)
    assert {p.turn_id for p in partials} <= {f.turn_id for f in finals(asr)}


async def test_silence_gives_no_turn_and_holds_no_more_than_the_preroll() -> None:
    asr = harness()
    quiet = frames_of(bytes(5 * RATE * 2), end=False)
    assert await asr.send(*quiet) == []
    held = len(asr.stored.unacknowledged)
    # The pre-roll (300 ms) and the voiced run that opens an utterance (90 ms, in 20 ms
    # chunks): 15 + 5 chunks, and the frame in hand.
    assert 0 < held <= 21, "only the pre-roll of a next utterance is held"
    end = AudioFrame(
        session_id="s1", message_id=f"run1:{len(quiet)}", seq=len(quiet),
        pcm=bytes(FRAME_BYTES), captured_at=CAPTURED_AT + 5, end_of_input=True,
    )  # fmt: skip
    assert await asr.send(end) == []
    assert asr.stored.unacknowledged == [], "the input ended: nothing more to hold"


async def test_the_end_of_the_input_ends_an_open_utterance() -> None:
    asr = harness()
    cut = SAMPLE[: int(1.6 * RATE) * 2]  # the first question, cut off in the middle
    await asr.send(*frames_of(cut))
    (final,) = finals(asr)
    assert final.speech_start_s == pytest.approx(0.56, abs=0.1)
    assert final.speech_end_s <= 1.6
    assert QUESTIONS[0][2].startswith(final.text)
    assert 0 < len(final.text) < len(QUESTIONS[0][2])
    assert [e.state for e in asr.published(ASR_SPEECH)] == ["start", "end"]
    # The next input starts afresh.
    await asr.send(*frames_of(SAMPLE, run="run2"))
    assert [f.text for f in finals(asr)][1:] == [text for _, _, text in QUESTIONS]


async def test_interleaved_sessions_are_heard_apart() -> None:
    asr = harness()
    alice, bob = frames_of(SAMPLE, session="alice"), frames_of(SAMPLE[4 * RATE * 2 :], "b", "bob")
    for n in range(max(len(alice), len(bob))):
        await asr.send(*[frames[n] for frames in (alice, bob) if n < len(frames)])
    by_session = {s: [f.text for f in finals(asr) if f.session_id == s] for s in ("alice", "bob")}
    assert by_session == {"alice": [q[2] for q in QUESTIONS], "bob": [QUESTIONS[1][2]]}
    assert all(f.turn_id and f.turn_id.startswith(("run1.", "b.")) for f in finals(asr))


async def test_talking_over_the_character_pauses_it_at_once_then_interrupts_its_turn() -> None:
    asr = harness()
    await asr.send(playing(level_dbfs=-8.0))
    await asr.send(*frames_of(MEASURED + SAMPLE[: int(3.5 * RATE) * 2]))
    pause, interrupt = controls(asr)
    assert pause.command == Pause(target_turn_id="r1")
    assert interrupt.command == Interrupt(target_turn_id="r1")
    assert [(c.message_id, c.turn_id, c.session_id) for c in (pause, interrupt)] == [
        ("run1.barge:0", "r1", "s1"), ("run1.barge:1", "r1", "s1"),
    ]  # fmt: skip
    published = asr.published()
    (final,) = finals(asr)
    assert final.text == QUESTIONS[0][2], "what interrupted the character is a turn"
    assert published.index(pause) < published.index(interrupt) < published.index(final)


async def test_a_short_sound_over_the_character_lets_it_go_on_and_is_no_turn() -> None:
    recognizer = SampleRecognizer()
    asr = harness(recognizer)
    await asr.send(playing(level_dbfs=-8.0))
    start = int(0.5 * RATE) * 2
    sound = MEASURED + bytes(start) + SAMPLE[start : start + int(0.4 * RATE) * 2]
    sound += bytes(2 * RATE * 2)
    await asr.send(*frames_of(sound))
    assert [c.command for c in controls(asr)] == [
        Pause(target_turn_id="r1"),
        Pause(target_turn_id="r1", paused=False),
    ]
    assert recognizer.heard, "it was long enough to transcribe"
    assert finals(asr) == [], "but it only talked over the character: not a turn"


async def test_the_users_speech_while_the_character_is_silent_is_no_barge_in() -> None:
    asr = harness(echo_tail_ms=0)  # no echo after the character stops: no need to wait
    await asr.send(playing(level_dbfs=-8.0).model_copy(update={"state": "finished"}))
    await asr.send(*frames_of(SAMPLE))
    assert controls(asr) == []
    assert len(finals(asr)) == 2


async def crash_and_go_on(crash_at: int) -> StageHarness[AsrStage]:
    """The sample through asr, which dies at its `crash_at`th publish; a replacement gets
    the frames it held again, then the stream goes on."""
    asr = harness()
    frames = frames_of(SAMPLE)
    asr.crash_after(publishes=crash_at)
    for n, frame in enumerate(frames):
        try:
            await asr.send(frame)
        except SimulatedCrash:
            await asr.restart()  # the held frames of the open utterance come again
            await asr.send(*frames[n + 1 :])  # and the stream goes on
            return asr
    raise AssertionError(f"asr published fewer than {crash_at} messages")


# At 5 and 6 the replacement's fresh voice detector hears the second utterance start a
# frame later than the first did: the checkpointed open utterance keeps its turn.
@pytest.mark.parametrize("crash_at", [1, 2, 3, 4, 5, 6])
async def test_a_crash_loses_no_utterance_and_answers_none_twice(crash_at: int) -> None:
    asr = await crash_and_go_on(crash_at)
    # A preemptive final (sent before the end of turn) may go out again after a crash,
    # under the same id, before the end of turn acknowledges the utterance's frames.
    assert [f.text for f in once_each(finals(asr))] == [q[2] for q in QUESTIONS], (
        "each answered once"
    )
    published: dict[tuple[str, str], dict[str, Any]] = {}
    for message in asr.published():
        key = (type(message).__name__, message.message_id)
        again = published.setdefault(key, content(message))
        assert content(message) == again, f"{key} made again differs"
    events = [e for e in asr.published(ASR_SPEECH) if isinstance(e, SpeechEvent)]
    turns = [f.turn_id for f in once_each(finals(asr))]
    assert sorted({(e.turn_id, e.state) for e in events}) == sorted(
        (turn, state) for turn in turns for state in ("end", "start")
    ), "each utterance starts and ends once, under the turn of its final"
    assert asr.stored.unacknowledged == []


@pytest.mark.parametrize("crash_at", [1, 2, 3])
async def test_a_crash_goes_on_as_if_nothing_had_happened(crash_at: int) -> None:
    clean = harness()
    await clean.send(*frames_of(SAMPLE))
    expected = {(type(m).__name__, m.message_id): content(m) for m in clean.published()}
    asr = await crash_and_go_on(crash_at)
    assert {(type(m).__name__, m.message_id): content(m) for m in asr.published()} == expected
