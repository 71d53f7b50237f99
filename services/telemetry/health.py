"""A stage process's health for orchestrators, served beside /metrics on the metrics port.

- `GET /healthz`: liveness, 200 while the process answers. A stage that lost Redis is still
  alive (its loops reconnect by themselves), so restarting it would not help.
- `GET /readyz`: readiness, 200 once every stage runtime in the process is built (its model
  loaded), serving, has taken part in a round of partition leases, and Redis answers a PING
  now; else 503. The JSON body says why, and which partitions the replica holds.

Kubernetes probes these (deploy/kubernetes/), Nomad's checks too (deploy/nomad/), and the
compose file's healthcheck.
"""

import functools
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol
from weakref import WeakSet

import redis
from redis.exceptions import RedisClusterException

PING_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class StageHealth:
    """What a stage runtime says of itself (read from the HTTP thread: plain values only)."""

    stage: str
    replica: str
    redis_url: str
    redis_cluster: bool  # REDIS_URL names a node of a Redis Cluster
    built: bool  # the stage is built: its model is loaded
    serving: bool  # it reads its topics (a spare on standby does not)
    leases_taken: bool  # it has taken part in a lease round (always true without partitions)
    partitions_held: list[int] = field(default_factory=list)


class HealthSource(Protocol):
    def health(self) -> StageHealth: ...


@dataclass(frozen=True)
class Readiness:
    ready: bool
    stage: str
    replica: str
    redis: bool
    partitions_held: list[int]
    why: str


class HealthBoard:
    """The stage runtimes of this process, and the readiness they add up to."""

    def __init__(self, ping: Callable[[str, bool], bool] | None = None) -> None:
        self.sources: WeakSet[HealthSource] = WeakSet()
        self._ping = ping or _ping
        self._lock = threading.Lock()

    def watch(self, source: HealthSource) -> None:
        with self._lock:
            self.sources.add(source)

    def unwatch(self, source: HealthSource) -> None:
        with self._lock:
            self.sources.discard(source)

    def readiness(self) -> Readiness:
        with self._lock:
            states = [source.health() for source in self.sources]
        if not states:
            return Readiness(False, "", "", False, [], "no stage is running in this process yet")
        return _combine(states, self._ping)


def _combine(states: Iterable[StageHealth], ping: Callable[[str, bool], bool]) -> Readiness:
    states = list(states)
    servers = {(s.redis_url, s.redis_cluster) for s in states}
    reachable = {url: ping(url, cluster) for url, cluster in servers}
    reasons = [
        why
        for s in states
        for why in (
            None if s.built else f"{s.stage}: still building (loading its model)",
            None if s.serving else f"{s.stage}: on standby, not serving",
            None if s.leases_taken else f"{s.stage}: has not taken part in the leases yet",
            None if reachable[s.redis_url] else f"{s.stage}: Redis does not answer",
        )
        if why is not None
    ]
    first = states[0]
    return Readiness(
        ready=not reasons,
        stage=",".join(s.stage for s in states),
        replica=",".join(s.replica for s in states),
        redis=all(reachable.values()),
        partitions_held=sorted({p for s in states for p in s.partitions_held}),
        why="; ".join(reasons) if reasons else f"{first.stage} is serving",
    )


REDIS_DOWN = (redis.RedisError, RedisClusterException)
"""What a blocking call raises while Redis is away (a cluster client's own error is no
RedisError)."""


def _ping(url: str, cluster: bool) -> bool:
    try:
        return bool(sync_client(url, cluster, PING_TIMEOUT_S).ping())
    except REDIS_DOWN:
        return False


@functools.cache
def sync_client(url: str, cluster: bool, timeout_s: float) -> "redis.Redis | redis.RedisCluster":
    """A blocking client for the metrics thread (/metrics and /readyz), one per server and
    kept: a probe or a scrape comes every few seconds. A cluster client when `cluster`."""
    if cluster:
        return redis.RedisCluster.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


BOARD = HealthBoard()


WsgiApp = Callable[[dict[str, object], Callable[..., object]], Iterable[bytes]]


def with_health(metrics_app: WsgiApp, board: HealthBoard = BOARD) -> WsgiApp:
    """A WSGI app: /healthz and /readyz from the board, everything else to metrics_app."""

    def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/healthz":
            return _reply(start_response, 200, {"alive": True})
        if path == "/readyz":
            readiness = board.readiness()
            return _reply(start_response, 200 if readiness.ready else 503, asdict(readiness))
        return metrics_app(environ, start_response)

    return app


def _reply(start_response: Callable[..., object], code: int, body: object) -> list[bytes]:
    data = json.dumps(body).encode()
    status = "200 OK" if code == 200 else f"{code} Service Unavailable"
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
