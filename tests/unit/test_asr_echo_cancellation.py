"""asr with echo_cancellation: the character's reply reaches the microphone as loud as the
user (through a synthetic room, 60 ms late); with the canceller the user's question over
it pauses the reply, and the echo alone never does; without it, the level gate cannot
tell them apart."""

import asyncio
from datetime import UTC, datetime

import numpy as np

from contracts import Pause, PlaybackProgress, TtsChunk
from services.audio_levels import loudest_dbfs
from tests.unit.test_asr_stage import (
    CAPTURED_AT,
    RATE,
    SAMPLE,
    controls,
    finals,
    frames_of,
    harness,
)

REPLY_S = 6.0
USER_AT_S = 3.0


def room(audio: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(5)
    taps = int(0.08 * RATE)
    rir = rng.standard_normal(taps) * 10 ** (-3 * np.arange(taps) / taps)
    rir[0] += 3 * np.sqrt(np.sum(rir**2))
    delayed = np.concatenate([np.zeros(int(0.06 * RATE)), audio])[: len(audio)]
    return np.convolve(delayed, rir / np.sqrt(np.sum(rir**2)))[: len(audio)]


def scene() -> tuple[TtsChunk, PlaybackProgress, bytes, bytes]:
    """The reply (the sample's second question, three times), what playback says, the
    microphone with the echo alone, and with the user's first question over it."""
    sample = np.frombuffer(SAMPLE, dtype="<i2").astype(float)
    reply = np.tile(sample[4 * RATE : 6 * RATE], 3)
    question = sample[int(0.5 * RATE) : int(2.5 * RATE)]
    echo = room(reply)
    echo *= np.sqrt(np.mean(question**2) / np.mean(echo**2))  # as loud as the user
    user = np.zeros_like(echo)
    user[int(USER_AT_S * RATE) : int(USER_AT_S * RATE) + len(question)] = question
    pcm = reply.astype("<i2").tobytes()
    chunk = TtsChunk(
        session_id="s1", turn_id="r1", seq=0, index=0, final=True, text="the reply",
        sample_rate=RATE, pcm=pcm, created_at=datetime.fromtimestamp(CAPTURED_AT - 1, UTC),
    )  # fmt: skip
    progress = PlaybackProgress(
        session_id="s1", turn_id="r1", seq=0, chunk_index=0, played_s=0.0, state="playing",
        level_dbfs=loudest_dbfs(pcm, RATE), remaining_s=REPLY_S,
        created_at=datetime.fromtimestamp(CAPTURED_AT, UTC),
    )  # fmt: skip

    def mic(x: np.ndarray) -> bytes:
        return bytes(np.clip(x, -32768, 32767).astype("<i2").tobytes())

    return chunk, progress, mic(echo), mic(echo + user)


async def test_the_user_interrupts_a_character_as_loud_as_them() -> None:
    chunk, progress, _, both = scene()
    asr = harness(echo_cancellation=True)
    await asr.send(chunk, progress, *frames_of(both))
    pauses = [c for c in controls(asr) if isinstance(c.command, Pause) and c.command.paused]
    assert pauses, "the user's question over the echo paused nothing"


async def test_the_echo_alone_interrupts_nothing() -> None:
    chunk, progress, echo, _ = scene()
    asr = harness(echo_cancellation=True)
    await asr.send(chunk, progress, *frames_of(echo))
    assert controls(asr) == []


async def test_without_the_canceller_the_level_gate_cannot_tell() -> None:
    chunk, progress, _, both = scene()
    asr = harness(echo_cancellation=False)
    await asr.send(chunk, progress, *frames_of(both))
    assert controls(asr) == []


async def test_when_the_character_is_quiet_the_user_is_heard_untouched() -> None:
    """Long after the character last played, the canceller has nothing to take out: the
    recognizer gets the microphone's own bytes (the sample recognizer matches them)."""
    chunk, progress, _, _ = scene()
    asr = harness(echo_cancellation=True)
    ended = datetime.fromtimestamp(CAPTURED_AT + REPLY_S, UTC)
    finished = progress.model_copy(update={"seq": 1, "state": "finished", "created_at": ended})
    await asr.send(chunk, progress, finished)
    await asyncio.sleep(0.35)  # the barge-in gate's echo tail (on its own clock) is over
    later = CAPTURED_AT + REPLY_S + 5
    await asr.send(
        *[f.model_copy(update={"captured_at": later + f.seq * 0.02}) for f in frames_of(SAMPLE)]
    )
    assert len(finals(asr)) == 2, "both questions heard word for word"
