"""Speaking and moving with real Piper audio: it transcribes back, the mouth follows it, and
a reply goes through tts, avatar and playback on Redis. (The stages' own logic is tested
in memory: tests/unit/test_{tts,avatar,playback}_stage.py.)"""

import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from redis.asyncio import Redis

from contracts import AvatarExpr, Envelope, PlaybackProgress, PolicyToken, TtsChunk
from contracts.topics import AVATAR_EXPR, PLAYBACK_PROGRESS, POLICY_TOKEN, TTS_CHUNK, Topic
from contracts.turns import playback_ended
from services.asr.recognizer import FasterWhisperRecognizer
from services.asr.settings import AsrSettings
from services.audio_levels import frame_loudness_db
from services.avatar.mouth import mouth_track
from services.avatar.settings import AvatarSettings
from services.avatar.stage import AvatarStage
from services.bus import Bus, BusSettings, Producer, StageRuntime
from services.playback.settings import PlaybackSettings
from services.playback.sinks import WavSink
from services.playback.stage import PlaybackStage
from services.tts.settings import TtsSettings
from services.tts.stage import TtsStage
from services.tts.synthesizer import PiperSynthesizer, Speech
from tests.helpers import read_topic, wait_until, word_error_rate

pytestmark = pytest.mark.integration

REPLY = "Hello there, my friend! The weather is lovely today. Shall we play a game of chess?"


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    return PiperSynthesizer(TtsSettings(variation=0.0))  # repeatable audio, repeatable results


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperRecognizer:
    return FasterWhisperRecognizer(AsrSettings())


def to_16k(speech: Speech) -> bytes:
    samples = np.frombuffer(speech.pcm, dtype="<i2").astype(np.float32) / 32768.0
    resampled = soxr.resample(samples, speech.sample_rate, 16_000)
    return bytes((np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.mark.parametrize(
    "text",
    ["The weather is lovely today.", "Shall we play a game of chess after the stream?"],
)
def test_piper_speech_transcribes_back_to_its_text(
    piper: PiperSynthesizer, whisper: FasterWhisperRecognizer, text: str
) -> None:
    speech = piper.synthesize(text)
    heard = whisper.transcribe(to_16k(speech)).text
    assert word_error_rate(text, heard) <= 0.2, heard


@pytest.mark.parametrize("use_alignments", [True, False])
def test_the_mouth_moves_only_where_the_audio_is_voiced(
    piper: PiperSynthesizer, use_alignments: bool
) -> None:
    settings = AvatarSettings()
    first, second = piper.synthesize("Hello there."), piper.synthesize("How are you?")
    pause = np.zeros(int(0.6 * first.sample_rate), dtype="<i2").tobytes()
    pcm = first.pcm + pause + second.pcm
    shift = len(first.pcm + pause) // 2
    alignments = [*first.alignments]
    alignments += [
        a.model_copy(update={"start_sample": a.start_sample + shift}) for a in second.alignments
    ]
    track = mouth_track(
        pcm, first.sample_rate, alignments if use_alignments else [], fps=settings.fps,
        silence_db=settings.silence_db, smoothing=settings.smoothing,
    )  # fmt: skip
    loud = frame_loudness_db(pcm, first.sample_rate, settings.fps)
    voiced = loud > settings.silence_db
    assert len(track) == len(voiced)
    for n, openness in enumerate(track):
        if openness > 0.05:
            assert voiced[max(0, n - 1) : n + 2].any(), f"frame {n} moves in silence"
    speaking = loud > -30
    moving = np.array(track) > 0.05
    assert moving[speaking].mean() > 0.7, "the mouth moves while the voice is loud"
    pause_frames = slice(
        int(len(first.pcm) / 2 / first.sample_rate * settings.fps) + 2,
        int(shift / first.sample_rate * settings.fps) - 1,
    )
    assert max(track[pause_frames]) == 0.0, "shut during the pause"


def tokens_of(text: str, session: str, turn: str) -> list[PolicyToken]:
    words = [w + " " for w in text.split(" ")]
    tokens = [
        PolicyToken(session_id=session, turn_id=turn, seq=i, index=i, text=w,
                    expressions=["happy"] if i == 0 else [])
        for i, w in enumerate(words)
    ]  # fmt: skip
    end = len(words)
    tokens.append(
        PolicyToken(
            session_id=session, turn_id=turn, seq=end, index=end, text="", final=True,
            reply_text=text, status="ok", expressions=["happy"],
        )
    )  # fmt: skip
    return tokens


async def test_a_three_sentence_reply_is_spoken_played_and_lip_synced(
    bus_settings: BusSettings, redis_client: Redis, piper: PiperSynthesizer, tmp_path: Path
) -> None:
    """Real Piper, real Redis: policy's tokens -> tts -> playback (WAV) and avatar."""

    async def build_tts(bus: Bus) -> TtsStage:
        return TtsStage(TtsSettings(), piper, bus)

    async def build_avatar(bus: Bus) -> AvatarStage:
        return AvatarStage(AvatarSettings(), bus)

    async def build_playback(bus: Bus) -> PlaybackStage:
        return PlaybackStage(PlaybackSettings(realtime=False), WavSink(tmp_path, False), bus)

    def on(topic: Topic[Any]) -> Callable[[], Awaitable[list[Envelope]]]:
        async def read() -> list[Envelope]:
            return await read_topic(redis_client, topic, bus_settings.partitions)

        return read

    chunks_out, exprs_out, progress_out = on(TTS_CHUNK), on(AVATAR_EXPR), on(PLAYBACK_PROGRESS)
    async with (
        StageRuntime(TtsStage, bus_settings, build=build_tts),
        StageRuntime(AvatarStage, bus_settings, build=build_avatar),
        StageRuntime(PlaybackStage, bus_settings, build=build_playback),
        Producer(bus_settings, "policy-stand-in", [POLICY_TOKEN]) as policy,
    ):
        for token in tokens_of(REPLY, "s1", "t1"):
            await policy.publish(token)

        async def over() -> bool:
            played = any(playback_ended(p) for p in await progress_out())
            return played and any(
                isinstance(e, AvatarExpr) and e.state == "idle" for e in await exprs_out()
            )

        await wait_until(over, timeout_s=60, what="the reply to play and the mouth to shut")
        chunks, exprs, progress = await chunks_out(), await exprs_out(), await progress_out()

    assert all(isinstance(c, TtsChunk) for c in chunks)
    spoken = [c for c in chunks if isinstance(c, TtsChunk)]
    assert len([c for c in spoken if c.text]) >= 3
    assert [c.index for c in spoken] == list(range(len(spoken)))
    assert spoken[-1].final
    assert sum(c.final for c in spoken) == 1
    assert " ".join(c.text for c in spoken if c.text) == REPLY
    assert spoken[0].text == "Hello there,"
    assert spoken[0].expressions == ["happy"]
    assert all(c.alignments for c in spoken if c.text), "Piper gives phoneme timings"

    with wave.open(str(tmp_path / "s1" / "t1.wav"), "rb") as wav:
        played = wav.readframes(wav.getnframes())
        assert wav.getframerate() == spoken[0].sample_rate
    assert played == b"".join(c.pcm for c in spoken), "the WAV is the chunks joined"

    reports = [p for p in progress if isinstance(p, PlaybackProgress)]
    assert [(p.chunk_index, p.state) for p in reports][-1] == (len(spoken) - 1, "finished")
    assert [p.seq for p in reports] == list(range(len(reports)))
    total = sum(c.duration_s for c in spoken)
    assert reports[-1].played_s == pytest.approx(total, abs=0.01)

    speaking = [e for e in exprs if isinstance(e, AvatarExpr) and e.state == "speaking"]
    assert len(speaking) == len([c for c in spoken if c.pcm])
    assert all(e.expression == "happy" for e in speaking)
    for expr, chunk in zip(speaking, [c for c in spoken if c.pcm], strict=True):
        assert len(expr.mouth_open) == int(np.ceil(chunk.duration_s * expr.fps))
        assert max(expr.mouth_open) > 0.5
    assert isinstance(exprs[-1], AvatarExpr)
    assert exprs[-1].state == "idle"
    assert exprs[-1].offset_s == pytest.approx(total), "the mouth shuts where the audio ends"
