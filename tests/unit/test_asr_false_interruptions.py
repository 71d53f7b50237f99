"""False interruptions: talking over the character long enough to interrupt it, with no
words or only a backchannel ("uh-huh"), lets it go on where it paused (asr in memory,
the bundled sample's voice, a recognizer that says what the test needs)."""

from contracts import Interrupt, Pause
from contracts.topics import ASR_SPEECH
from services.asr.recognizer import Transcript
from tests.unit.test_asr_end_of_turn import send_in_time
from tests.unit.test_asr_stage import (
    MEASURED,
    QUESTIONS,
    RATE,
    SAMPLE,
    SampleRecognizer,
    controls,
    finals,
    frames_of,
    harness,
    playing,
)

OVER_THE_CHARACTER = MEASURED + SAMPLE[: int(3.5 * RATE) * 2]
"""A second of the character alone, then the user's first question (2 s) over it."""
HOLD = Pause(target_turn_id="r1")
GO_ON = Pause(target_turn_id="r1", paused=False)


class Saying(SampleRecognizer):
    """Hears `text` where the sample says `instead_of` (its first question), the
    sample's words elsewhere."""

    def __init__(self, text: str, instead_of: str = QUESTIONS[0][2]) -> None:
        super().__init__()
        self.text, self.instead_of = text, instead_of

    def transcribe(self, pcm: bytes) -> Transcript:
        heard = super().transcribe(pcm)
        if heard.text == self.instead_of:
            return Transcript(self.text, "en", 0.9 if self.text else 0.0)
        return heard


async def test_a_backchannel_over_the_character_lets_it_go_on_and_is_no_turn() -> None:
    asr = harness(Saying("Uh-huh, yeah."))
    await asr.send(playing(level_dbfs=-8.0))
    await asr.send(*frames_of(OVER_THE_CHARACTER))
    assert [c.command for c in controls(asr)] == [HOLD, GO_ON]
    assert finals(asr) == []


async def test_speech_without_words_over_the_character_lets_it_go_on() -> None:
    asr = harness(Saying(""))  # a laugh, a cough: Whisper finds no words
    await asr.send(playing(level_dbfs=-8.0))
    await asr.send(*frames_of(OVER_THE_CHARACTER))
    assert [c.command for c in controls(asr)] == [HOLD, GO_ON]
    assert finals(asr) == []


async def test_words_interrupt_once_they_are_known() -> None:
    asr = harness()
    await asr.send(playing(level_dbfs=-8.0))
    await asr.send(*frames_of(OVER_THE_CHARACTER))
    assert [c.command for c in controls(asr)] == [HOLD, Interrupt(target_turn_id="r1")]
    (final,) = finals(asr)
    assert final.text == QUESTIONS[0][2]


async def test_without_resume_a_backchannel_long_enough_still_interrupts() -> None:
    asr = harness(Saying("Uh-huh."), resume_false_interruption=False)
    await asr.send(playing(level_dbfs=-8.0))
    await asr.send(*frames_of(OVER_THE_CHARACTER))
    assert [c.command for c in controls(asr)] == [HOLD, Interrupt(target_turn_id="r1")]


async def test_with_no_backchannels_configured_any_words_interrupt() -> None:
    asr = harness(Saying("Yeah."), backchannels="")
    await asr.send(playing(level_dbfs=-8.0))
    await asr.send(*frames_of(OVER_THE_CHARACTER))
    assert [c.command for c in controls(asr)] == [HOLD, Interrupt(target_turn_id="r1")]


async def test_talking_on_past_the_timeout_interrupts_before_the_words() -> None:
    asr = harness(Saying("Uh-huh."), false_interruption_timeout_ms=1000)
    await asr.send(playing(level_dbfs=-8.0))
    await asr.send(*frames_of(OVER_THE_CHARACTER))
    _, interrupt = controls(asr)
    assert interrupt.command == Interrupt(target_turn_id="r1")
    published = asr.published()
    speech_end = next(e for e in asr.published(ASR_SPEECH) if e.state == "end")
    assert published.index(interrupt) < published.index(speech_end), "while still talking"


async def test_a_backchannel_then_a_question_interrupts() -> None:
    """ "Uh-huh... what is the capital of France?": the character went on after the
    backchannel, and the question, over it again, interrupts it."""
    asr = harness(Saying("Uh-huh.", instead_of="Hello Marionette,"), end_silence_ms=1200)
    await asr.send(playing(level_dbfs=-8.0))
    gap = bytes(int(0.6 * RATE) * 2)
    first = SAMPLE[int(0.4 * RATE) * 2 : int(1.25 * RATE) * 2]  # "Hello Marionette"
    second = SAMPLE[int(4.1 * RATE) * 2 : int(6.2 * RATE) * 2]
    await send_in_time(asr, MEASURED + first + gap + second + bytes(2 * RATE * 2))
    commands = [c.command for c in controls(asr) if c.turn_id == "r1"]
    assert commands == [HOLD, GO_ON, HOLD, Interrupt(target_turn_id="r1")]
    assert finals(asr), "the question is a turn"
    assert all(f.text.startswith("Hello Marionette") for f in finals(asr))
    assert "What is the capital" in finals(asr)[-1].text


async def test_a_backchannel_at_a_pause_over_the_character_prepares_no_reply() -> None:
    """ "Mm-hmm" heard at the first pause, before it is long enough to interrupt: no
    preemptive turn (a reply prepared, then dropped), and the character goes on."""
    asr = harness(Saying("Mm-hmm.", instead_of="Hello Marionette,"))
    await asr.send(playing(level_dbfs=-8.0))
    first = SAMPLE[int(0.4 * RATE) * 2 : int(1.25 * RATE) * 2]  # "Hello Marionette"
    await send_in_time(asr, MEASURED + first + bytes(2 * RATE * 2))
    assert [c.command for c in controls(asr)] == [HOLD, GO_ON], "no superseded turn either"
    assert finals(asr) == []
