"""benchmarks.load in its quick plan, against real Redis and real stage processes (policy,
tts, asr, gateway under the supervisor): every session gets its reply, and the figures
say what they claim. policy's LLM is the Ollama stand-in (tests/standins/ollama.py), so a
reply takes a fraction of a second; Piper, Whisper and the gateway are the real ones.
No timing is asserted."""

import json
import math

import pytest

from benchmarks.load import QUICK, Backend, run_config
from benchmarks.load_report import as_json, markdown
from services.bus import BusSettings
from tests.standins.ollama import ollama_stand_in

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def test_the_quick_plan_answers_every_session_and_measures_it(
    bus_settings: BusSettings,
) -> None:
    with ollama_stand_in() as llm:
        backend = Backend(
            "scripted",
            {"MARIONETTE_POLICY_BACKEND": "ollama", "MARIONETTE_POLICY_BASE_URL": llm.url,
             "MARIONETTE_POLICY_MODEL": "llama3.2"},
        )  # fmt: skip
        config = await run_config(bus_settings, backend, 1, QUICK, say=lambda _: None)
        asked = [r for r in llm.requests if r["path"] == "/api/chat"]

    assert [(c.kind, c.n) for c in config.cases] == [
        ("chat", 1), ("chat", 2), ("dialogue", 1), ("dialogue", 2), ("voice", 1),
    ]  # fmt: skip
    for case in config.cases:
        where = f"{case.kind} N={case.n}"
        assert [t.status for t in case.turns] == ["ok"] * case.n, where
        assert len({t.session for t in case.turns}) == case.n, f"{where}: a session each"
        assert len({t.turn_id for t in case.turns}) == case.n, where
        assert all(t.policy_status == "ok" for t in case.turns), where
        assert all("Hello chat" in t.reply for t in case.turns), where  # the scripted reply
        first = [t.first_audio_ms for t in case.turns]
        assert all(math.isfinite(ms) and ms > 0 for ms in first), (where, first)
        assert case.first_audio(0.5) <= case.first_audio(0.95) == max(first)
        assert all(t.done_at >= t.sent_at for t in case.turns), where
        assert case.wall_s > 0
        assert case.turns_per_min == pytest.approx(case.n / case.wall_s * 60)
        assert case.settled, f"{where}: work was left in a stage"
        assert case.restarts == 0
        assert 1 <= case.generations_at_once <= case.n, where
        assert case.slots_at_once is None  # no llama-server here
        assert set(case.backlog) == {"policy", "tts", "asr"}
        used = case.by_stage()
        assert {"policy", "tts", "asr", "gateway"} <= set(used), where
        assert all(use.peak_rss_mb > 1 for use in used.values()), used
        assert case.cpu_s > 0, where
        assert used["tts"].cpu_s > 0, f"{where}: tts spoke every reply"
    voice = config.cases[-1].turns[0]
    assert voice.client_first_block_ms >= voice.first_audio_ms  # the bus, then the client
    # Every counted turn, the warm-ups and policy's own warm-up reached the LLM once.
    assert len(asked) >= 1 + 3 + sum(c.n for c in config.cases)

    document = json.loads(json.dumps(as_json([config])))
    cases = document["configs"][0]["cases"]
    assert [c["vs_n1"]["s_per_turn"] for c in cases if c["n"] == 1] == [1.0, 1.0, 1.0]
    assert all(len(c["first_audio_ms"]["values"]) == c["n"] for c in cases)
    assert all(c["processes"]["policy"]["cpu_s"] >= 0 for c in cases)
    table = markdown([config]).splitlines()
    assert sum(line.startswith("| scripted | 1 |") for line in table) == 2 * len(cases)
