"""tts in memory: units, numbering, interrupts, and a crash in the middle of a turn."""

import pytest

from contracts import Control, Interrupt, PolicyToken, TtsChunk
from services.bus.harness import SimulatedCrash, StageHarness
from services.tts.settings import TtsSettings
from services.tts.stage import TtsStage
from services.tts.synthesizer import Speech

RATE = 16_000


class FakeSynthesizer:
    """One 10 ms block of audio per character, so a chunk's length shows its text."""

    sample_rate = RATE

    def __init__(self) -> None:
        self.spoken: list[str] = []

    def synthesize(self, text: str) -> Speech:
        self.spoken.append(text)
        return Speech(b"\x01\x00" * (RATE // 100) * len(text), RATE, [])


def reply(text: str, turn: str = "t1", session: str = "s1") -> list[PolicyToken]:
    words = [w + " " for w in text.split(" ")]
    tokens = [
        PolicyToken(session_id=session, turn_id=turn, seq=i, index=i, text=w)
        for i, w in enumerate(words)
    ]
    end = len(words)
    tokens.append(
        PolicyToken(session_id=session, turn_id=turn, seq=end, index=end, text="", final=True,
                    reply_text=text, status="ok")
    )  # fmt: skip
    return tokens


def harness(synthesizer: FakeSynthesizer | None = None) -> StageHarness[TtsStage]:
    fake = synthesizer or FakeSynthesizer()
    return StageHarness(lambda bus: TtsStage(TtsSettings(), fake, bus))


REPLY = "Hello there, my friend! The weather is lovely today. Shall we play a game of chess?"


async def test_a_reply_is_spoken_in_numbered_units_ending_with_one_final() -> None:
    tts = harness()
    chunks: list[TtsChunk] = await tts.send(*reply(REPLY))  # type: ignore[assignment]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert " ".join(c.text for c in chunks if c.text) == REPLY
    assert chunks[0].text == "Hello there,", "the first unit is short"


async def test_a_redelivered_token_is_not_spoken_again() -> None:
    tts = harness()
    tokens = reply(REPLY)
    await tts.send(*tokens[:6])
    await tts.send(tokens[3], *tokens[6:])
    texts = [c.text for c in tts.published()]
    assert " ".join(t for t in texts if t) == REPLY


@pytest.mark.parametrize("crash_at", [1, 2, 3])
async def test_a_crash_mid_turn_loses_and_repeats_no_word(crash_at: int) -> None:
    fake = FakeSynthesizer()
    tts = harness(fake)
    tokens = reply(REPLY)
    tts.crash_after(publishes=crash_at)
    with pytest.raises(SimulatedCrash):
        await tts.send(*tokens)
    await tts.restart()
    rest = [t for t in tokens if t.index > max((t.index for t in tokens), default=0)]
    await tts.send(*tokens, *rest)  # the producer's retries, duplicates included
    chunks: list[TtsChunk] = tts.published()
    assert [c.index for c in chunks] == list(range(len(chunks))), "contiguous, once each"
    assert sum(c.final for c in chunks) == 1
    assert " ".join(c.text for c in chunks if c.text) == REPLY


async def test_an_interrupted_turn_publishes_nothing_more() -> None:
    tts = harness()
    tokens = reply(REPLY)
    await tts.send(*tokens[:4])
    spoken = len(tts.published())
    await tts.send(
        Control(session_id="s1", message_id="barge:0", seq=0,
                command=Interrupt(target_turn_id="t1")),
        *tokens[4:],
    )  # fmt: skip
    assert len(tts.published()) == spoken
    assert not await tts.stage.speech.load("s1", "t1"), "its state is gone"


async def test_a_reply_without_words_still_ends_with_a_final_chunk() -> None:
    tts = harness()
    chunks: list[TtsChunk] = await tts.send(*reply("").__getitem__(slice(1, None)))  # type: ignore[assignment]
    assert [(c.index, c.final, c.pcm) for c in chunks] == [(0, True, b"")]
