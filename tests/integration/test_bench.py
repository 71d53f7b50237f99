"""`marionette bench` on the real pipeline: it times a spoken turn and takes it apart."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.bench.timeline import PARTS
from services.bench.utterances import QUESTIONS
from tests.helpers import word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BENCH_TIMEOUT_S = 400


def test_bench_times_a_turn_through_the_live_pipeline(tmp_path: Path) -> None:
    env = {
        key: value for key, value in os.environ.items() if key != "REDIS_URL"
    } | {
        "MARIONETTE_TTS_VARIATION": "0",
        "MARIONETTE_POLICY_TEMPERATURE": "0",
        "MARIONETTE_POLICY_MAX_TOKENS": "30",
        "MARIONETTE_PLAYBACK_OUTPUT": "wav",
        "MARIONETTE_PLAYBACK_WAV_DIR": str(tmp_path / "playback"),
    }  # fmt: skip
    log = tmp_path / "bench.log"
    bench = subprocess.Popen(
        [sys.executable, "-m", "services", "bench", "--utterances", "1", "--warmup", "0",
         "--json", "--log", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**env, "PYTHONFAULTHANDLER": "1"}, cwd=tmp_path,
    )  # fmt: skip
    try:
        stdout, stderr = bench.communicate(timeout=BENCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        bench.send_signal(signal.SIGABRT)  # faulthandler prints where every thread is
        stdout, stderr = bench.communicate()
    stages_log = log.read_text() if log.exists() else "(no log)"
    assert bench.returncode == 0, stderr[-6000:] + stages_log[-3000:]
    report = json.loads(stdout)

    [turn] = report["turns"]
    assert turn["error"] == ""
    assert word_error_rate(QUESTIONS[0], turn["heard"]) <= 0.25
    parts = turn["parts"]
    assert sum(parts[p] for p in PARTS) == pytest.approx(parts["voice-to-voice"], abs=1e-6)
    # The transcript starts at the first 150 ms pause (plus the VAD's hangover); the
    # reply may play only from the end of turn, after 500 ms of silence at the least.
    assert 0.1 < parts["endpointing wait"] < 2.0
    assert parts["voice-to-voice"] >= 0.5
    assert parts["held for end of turn"] >= 0
    for part in ("ASR final", "LLM first token", "TTS first audio"):
        assert parts[part] > 0, part
    assert all(parts[p] >= -0.002 for p in PARTS if p.startswith("hop ")), parts
    assert {row["part"] for row in report["summary"]} >= {*PARTS, "voice-to-voice", "bus hops"}
    assert report["raw_hop_p50_ms"] > 0
    # The stages it started wrote their lines, prefixed, and were stopped.
    assert "     asr | " in stages_log
    assert "  policy | " in stages_log
