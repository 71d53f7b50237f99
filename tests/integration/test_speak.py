"""Speaking and moving: real Piper audio, lip-sync, ordered chunks, playback to WAV."""

import asyncio
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soxr
from redis.asyncio import Redis

from contracts import AvatarExpr, PlaybackProgress, PolicyToken, TtsChunk
from contracts.topics import AVATAR_EXPR, PLAYBACK_PROGRESS, POLICY_TOKEN, TTS_CHUNK
from services.asr.recognizer import FasterWhisperRecognizer
from services.asr.settings import AsrSettings
from services.audio_levels import frame_loudness_db
from services.avatar import stage as avatar
from services.avatar.mouth import mouth_track
from services.avatar.settings import AvatarSettings
from services.bus import BusSettings, Stage, StageRuntime
from services.playback import stage as playback
from services.playback.settings import PlaybackSettings
from services.playback.sinks import WavSink
from services.tts import stage as tts
from services.tts.settings import TtsSettings
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
    return (np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes()


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


@pytest.fixture
def playback_dir(tmp_path: Path) -> Iterator[Path]:
    previous = playback.service.put(
        playback.PlaybackService(
            PlaybackSettings(realtime=False), WavSink(tmp_path, realtime=False)
        )
    )
    yield tmp_path
    playback.service.put(previous)


async def test_a_three_sentence_reply_is_spoken_played_and_lip_synced(
    bus_settings: BusSettings, redis_client: Redis, piper: PiperSynthesizer, playback_dir: Path
) -> None:
    tts.service.put(tts.TtsService(TtsSettings(), piper))
    avatar.service.put(avatar.AvatarService(AvatarSettings()))
    policy = Stage("policy-stand-in")
    tokens = policy.publisher(POLICY_TOKEN)
    async with (
        StageRuntime(tts.stage, bus_settings),
        StageRuntime(avatar.stage, bus_settings),
        StageRuntime(playback.stage, bus_settings),
        StageRuntime(policy, bus_settings),
    ):
        for token in tokens_of(REPLY, "s1", "t1"):
            await tokens.publish(token)

        async def finished() -> bool:
            progress = await read_topic(redis_client, PLAYBACK_PROGRESS, bus_settings.partitions)
            return any(isinstance(p, PlaybackProgress) and p.state == "finished" for p in progress)

        await wait_until(finished, timeout_s=60, what="the reply to finish playing")
        await asyncio.sleep(0.3)
        chunks = [c for c in await read_topic(redis_client, TTS_CHUNK, bus_settings.partitions)]
        exprs = await read_topic(redis_client, AVATAR_EXPR, bus_settings.partitions)
        progress = await read_topic(redis_client, PLAYBACK_PROGRESS, bus_settings.partitions)

    assert all(isinstance(c, TtsChunk) for c in chunks)
    spoken = [c for c in chunks if isinstance(c, TtsChunk)]
    assert len([c for c in spoken if c.text]) >= 3
    assert [c.index for c in spoken] == list(range(len(spoken)))
    assert spoken[-1].final
    assert sum(c.final for c in spoken) == 1
    assert " ".join(c.text for c in spoken if c.text) == REPLY
    assert spoken[0].text == "Hello there, my friend!"
    assert spoken[0].expressions == ["happy"]
    assert all(c.alignments for c in spoken if c.text), "Piper gives phoneme timings"

    with wave.open(str(playback_dir / "s1" / "t1.wav"), "rb") as wav:
        played = wav.readframes(wav.getnframes())
        assert wav.getframerate() == spoken[0].sample_rate
    assert played == b"".join(c.pcm for c in spoken), "the WAV is the chunks joined"

    states = [(p.chunk_index, p.state) for p in progress if isinstance(p, PlaybackProgress)]
    assert states[-1] == (len(spoken) - 1, "finished")
    total = sum(c.duration_s for c in spoken)
    assert progress[-1].played_s == pytest.approx(total, abs=0.01)  # type: ignore[attr-defined]

    speaking = [e for e in exprs if isinstance(e, AvatarExpr) and e.state == "speaking"]
    assert len(speaking) == len([c for c in spoken if c.pcm])
    assert all(e.expression == "happy" for e in speaking)
    for expr, chunk in zip(speaking, [c for c in spoken if c.pcm], strict=True):
        assert len(expr.mouth_open) == int(np.ceil(chunk.duration_s * expr.fps))
        assert max(expr.mouth_open) > 0.5
    assert isinstance(exprs[-1], AvatarExpr)
    assert exprs[-1].state == "idle"


async def test_chunks_out_of_order_are_played_in_order(
    bus_settings: BusSettings, playback_dir: Path
) -> None:
    def chunk(index: int, final: bool = False) -> TtsChunk:
        pcm = np.full(2205, index + 1, dtype="<i2").tobytes()
        return TtsChunk(
            session_id="s2", turn_id="t9", seq=index, index=index, final=final,
            text=f"part {index}", sample_rate=22_050, pcm=pcm,
        )  # fmt: skip

    chunks = [chunk(0), chunk(1), chunk(2, final=True)]
    async with StageRuntime(playback.stage, bus_settings):
        for index in (1, 0, 0, 2):  # late, early, a duplicate
            await (await playback.service.get()).handle(chunks[index])
    with wave.open(str(playback_dir / "s2" / "t9.wav"), "rb") as wav:
        assert wav.readframes(wav.getnframes()) == b"".join(c.pcm for c in chunks)
