"""How /readyz adds up the stage runtimes of a process (services/telemetry/health.py)."""

from services.telemetry.health import HealthBoard, StageHealth


class Source:
    def __init__(self, health: StageHealth) -> None:
        self._health = health

    def health(self) -> StageHealth:
        return self._health


def state(**changes: object) -> StageHealth:
    fields: dict[str, object] = dict(
        stage="tts", replica="tts-1", redis_url="redis://r", redis_cluster=False, built=True,
        serving=True,
        leases_taken=True, partitions_held=[1, 2],
    )  # fmt: skip
    fields.update(changes)
    return StageHealth(**fields)  # type: ignore[arg-type]


def readiness(*states: StageHealth, redis_up: bool = True) -> tuple[bool, str]:
    board = HealthBoard(ping=lambda url, cluster: redis_up)
    sources = [Source(s) for s in states]
    for source in sources:
        board.watch(source)
    ready = board.readiness()
    return ready.ready, ready.why


def test_serving_with_redis_is_ready() -> None:
    assert readiness(state()) == (True, "tts is serving")


def test_each_missing_condition_is_named() -> None:
    assert readiness(state(built=False))[1] == "tts: still building (loading its model)"
    assert readiness(state(serving=False))[1] == "tts: on standby, not serving"
    assert readiness(state(leases_taken=False))[1] == "tts: has not taken part in the leases yet"
    assert readiness(state(), redis_up=False) == (False, "tts: Redis does not answer")


def test_every_runtime_of_the_process_must_be_ready() -> None:
    ready, why = readiness(state(), state(stage="avatar", serving=False))
    assert not ready
    assert why == "avatar: on standby, not serving"


def test_no_runtime_is_not_ready() -> None:
    assert readiness() == (False, "no stage is running in this process yet")


def test_partitions_held_are_merged() -> None:
    board = HealthBoard(ping=lambda url, cluster: True)
    sources = [Source(state(partitions_held=[3, 1])), Source(state(partitions_held=[2]))]
    for source in sources:
        board.watch(source)
    assert board.readiness().partitions_held == [1, 2, 3]
