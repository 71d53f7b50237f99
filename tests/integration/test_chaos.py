"""The fault suite, short: a whole Marionette answers while its stages are SIGKILLed in turn
and its Redis is restarted, and nothing is lost, doubled or cut short.

`marionette chaos` runs the long version (100+ kills) before a show; these run in CI.
"""

from pathlib import Path

import pytest

from services.chaos.run import ChaosPlan, run_chaos
from services.chaos.verdict import ChaosReport

pytestmark = pytest.mark.integration


def assert_nothing_went_wrong(report: ChaosReport) -> None:
    problems = [f"{t.verdict} {t.turn_id}: {t.why}" for t in report.turns
                if t.verdict != "answered once"]  # fmt: skip
    assert not problems, problems
    assert report.dead_letters == [], "no dead letter: nothing malformed was sent"
    assert all(k.served_again_s is not None for k in report.kills), report.kills


@pytest.mark.timeout(600)
def test_one_replica_each_killed_in_turn_and_a_redis_restart(tmp_path: Path) -> None:
    stages = {"asr": 1, "policy": 1, "tts": 1, "avatar": 1, "playback": 1}
    plan = ChaosPlan(
        turns=12, every_s=2.5, spoken_share=0.3, kill_every_s=(2.0, 3.0), kills=10,
        round_robin=True, redis_restarts=1, stages=stages, settle_s=150, seed=7,
    )  # fmt: skip
    report = run_chaos(plan, tmp_path)
    killed = {k.stage for k in report.kills}
    assert killed == set(stages), f"every stage was killed: {killed}"
    assert len(report.redis_restarts) == 1
    assert report.lease_changes_after_restarts == [0], "no lease changed hands over a restart"
    assert {t.kind for t in report.turns} == {"chat", "speech"}
    assert_nothing_went_wrong(report)


@pytest.mark.timeout(600)
def test_two_replicas_of_policy_and_tts_killed_in_turn(tmp_path: Path) -> None:
    stages = {"policy": 2, "tts": 2, "avatar": 1, "playback": 1}
    plan = ChaosPlan(
        turns=12, every_s=2.5, spoken_share=0.0, kill_every_s=(2.0, 3.0), kills=8,
        round_robin=True, stages=stages, victims=["policy", "tts"], settle_s=150, seed=11,
    )  # fmt: skip
    report = run_chaos(plan, tmp_path)
    assert {k.replica for k in report.kills} == {"policy-1", "policy-2", "tts-1", "tts-2"}
    assert_nothing_went_wrong(report)
