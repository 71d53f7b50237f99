"""Speakers and microphones through PortAudio, on ALSA's null device (a stand-in sound card).

No sound card exists where the tests run, so ALSA is given a `null` PCM (`.asoundrc` in a
HOME of the test's own): PortAudio opens it like any device, playback writes real audio
through it, and capture reads real (silent) blocks from it. Needs libportaudio2, which
scripts/test.sh installs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts import TtsChunk
from contracts.topics import AUDIO_FRAME, PLAYBACK_PROGRESS, TTS_CHUNK
from services.bus import BusSettings, Producer
from tests.helpers import read_topic, wait_until
from tests.integration.workers import REPO_ROOT, worker_env

pytestmark = pytest.mark.integration

NULL_DEVICE = "marionette_null"
ASOUNDRC = f"""
pcm.!default {{ type null }}
pcm.{NULL_DEVICE} {{ type null hint {{ show on description "null sink for tests" }} }}
"""


@pytest.fixture
def null_sound_card(tmp_path: Path) -> dict[str, str]:
    """Environment for a child process that sees the null device as its sound card."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(ASOUNDRC)
    env = {"HOME": str(home)}
    probe = subprocess.run(
        [sys.executable, "-c", "import sounddevice"],
        capture_output=True, text=True, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, (
        "PortAudio is missing: apt-get install libportaudio2 (scripts/test.sh installs it)\n"
        + probe.stderr
    )
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> "subprocess.Popen[bytes]":
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services", *args], cwd=REPO_ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_devices_lists_the_sound_card(null_sound_card: dict[str, str]) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "services", "devices", "--json"],
        capture_output=True, text=True, env={**os.environ, **null_sound_card}, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert NULL_DEVICE in [d["name"] for d in json.loads(listed.stdout)]


async def test_playback_plays_a_reply_through_the_speaker(
    null_sound_card: dict[str, str], bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    env = {
        **worker_env(bus_settings), **null_sound_card,
        "MARIONETTE_PLAYBACK_OUTPUT": "speaker", "MARIONETTE_PLAYBACK_DEVICE": NULL_DEVICE,
        "MARIONETTE_PLAYBACK_WAV_DIR": str(tmp_path / "wav"),
    }  # fmt: skip
    log = tmp_path / "playback.log"
    playback = start(["run", "playback"], env, log)
    try:
        async with Producer(bus_settings, "tts-stand-in", [TTS_CHUNK]) as tts:
            for index in range(2):
                await tts.publish(
                    TtsChunk(
                        session_id="room", turn_id="t1", seq=index, index=index,
                        final=index == 1, text="la", sample_rate=22_050,
                        pcm=b"\x10\x00" * 11_025,
                    )
                )  # fmt: skip

        async def finished() -> bool:
            assert playback.poll() is None, log.read_text()
            progress = await read_topic(redis_client, PLAYBACK_PROGRESS, bus_settings.partitions)
            return any(getattr(p, "state", "") == "finished" for p in progress)

        await wait_until(finished, timeout_s=60, what=f"playback to finish\n{log.read_text()}")
        progress = await read_topic(redis_client, PLAYBACK_PROGRESS, bus_settings.partitions)
        assert [(p.chunk_index, p.state) for p in progress] == [  # type: ignore[attr-defined]
            (0, "playing"), (1, "playing"), (1, "finished"),
        ]  # fmt: skip
        assert progress[-1].played_s == pytest.approx(1.0)  # type: ignore[attr-defined]
        assert "SpeakerSink" in log.read_text()
        assert not (tmp_path / "wav").exists(), "a speaker was there: no WAV should be written"
    finally:
        playback.terminate()
        playback.wait(timeout=20)


async def test_capture_reads_the_microphone(
    null_sound_card: dict[str, str], bus_settings: BusSettings, redis_client: Redis, tmp_path: Path
) -> None:
    env = {**worker_env(bus_settings), **null_sound_card}
    log = tmp_path / "capture.log"
    capture = start(["capture", "--device", NULL_DEVICE, "--session", "mic"], env, log)
    try:

        async def heard() -> bool:
            assert capture.poll() is None, log.read_text()
            frames = await read_topic(redis_client, AUDIO_FRAME, bus_settings.partitions)
            return len(frames) >= 25

        await wait_until(heard, timeout_s=60, what=f"frames from the microphone\n{log.read_text()}")
        frames = await read_topic(redis_client, AUDIO_FRAME, bus_settings.partitions)
        assert {f.session_id for f in frames} == {"mic"}
        # Resampled from the device's rate to 16 kHz mono, 20 ms a frame, in order.
        assert {len(f.pcm) for f in frames} == {640}  # type: ignore[attr-defined]
        assert [f.seq for f in frames] == list(range(len(frames)))
    finally:
        capture.terminate()
        capture.wait(timeout=20)
