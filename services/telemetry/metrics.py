"""Prometheus metrics of a stage process, served on /metrics (settings.metrics_port).

Handler time per stage and stream comes from FastStream's Prometheus middleware
(`faststream_received_processed_messages_duration_seconds{app_name=STAGE}`); the rest is
here: the model latencies the stages observe, and the bus's own view, read when scraped:
what each consumer handled, dead-lettered and dropped, and each group's backlog per
(partition) stream.
"""

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol
from weakref import WeakSet
from wsgiref.simple_server import make_server

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.registry import Collector

from services.telemetry.health import PING_TIMEOUT_S, REDIS_DOWN, sync_client, with_health

log = logging.getLogger("marionette.telemetry")

REGISTRY = CollectorRegistry()
"""One registry per process; every stage runtime in the process reports into it."""

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

LLM_FIRST_TOKEN = Histogram(
    "marionette_llm_time_to_first_token_seconds",
    "From the request to the LLM until its first token of a reply.",
    ["backend"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TTS_FIRST_AUDIO = Histogram(
    "marionette_tts_time_to_first_audio_seconds",
    "From a reply's first token reaching tts until its first audio chunk is published.",
    ["backend"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ASR_FINAL_LATENCY = Histogram(
    "marionette_asr_final_seconds",
    "From the end of the user's speech (capture time) until asr publishes the final transcript.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
END_OF_TURN = Counter(
    "marionette_asr_end_of_turn_total",
    "End-of-turn decisions at a pause: finished or unfinished (Smart Turn and the words).",
    ["decision"],
    registry=REGISTRY,
)
FALSE_INTERRUPTIONS = Counter(
    "marionette_asr_false_interruptions_total",
    "Talking over the character that held it paused but had no words, or only "
    "backchannels ('yeah', 'uh-huh'): the character went on where it paused.",
    registry=REGISTRY,
)
PREEMPTIVE_TURNS = Counter(
    "marionette_asr_preemptive_turns_total",
    "Transcripts published before the end of turn was certain: confirmed (the reply was "
    "ready sooner) or superseded (the user went on; that reply's work was wasted).",
    ["outcome"],
    registry=REGISTRY,
)
MEMORY_RECALL = Counter(
    "marionette_memory_recall_total",
    "Long-term memory searches of a turn: hit (memories added to the prompt), miss (none "
    "close enough) or over_budget (the search took too long; the turn went on without).",
    ["result"],
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "marionette_tool_calls_total",
    "Tool calls by tool and outcome (ok, error, timeout, refused).",
    ["tool", "outcome"],
    registry=REGISTRY,
)


class ConsumerCounts(Protocol):
    @property
    def handled(self) -> int: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def stale(self) -> int: ...
    @property
    def muted(self) -> int: ...
    @property
    def dead_letters(self) -> int: ...
    @property
    def retries(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def claimed(self) -> int: ...


class WatchedRuntime(Protocol):
    """What the bus collector needs of a StageRuntime (services.bus.stage)."""

    @property
    def group(self) -> str: ...

    @property
    def redis_url(self) -> str: ...

    @property
    def redis_cluster(self) -> bool: ...

    def consumer_counts(self) -> Mapping[str, ConsumerCounts]: ...

    def consumed_streams(self) -> list[tuple[str, str]]: ...

    def dead_letter_streams(self) -> dict[str, str]: ...


class BusCollector(Collector):
    def __init__(self) -> None:
        self.runtimes: WeakSet[WatchedRuntime] = WeakSet()

    def _client(self, runtime: "WatchedRuntime") -> "redis.Redis | redis.RedisCluster":
        return sync_client(runtime.redis_url, runtime.redis_cluster, PING_TIMEOUT_S)

    def collect(self) -> Iterator[Metric]:
        runtimes = list(self.runtimes)
        consumed = CounterMetricFamily(
            "marionette_consumed_messages",
            "Entries a stage's consumer finished, by outcome: handled, duplicate, "
            "stale (of an interrupted turn), muted (its stage switched off), dead_letter, "
            "dropped (overflow: old audio frames), retried, claimed.",
            labels=["stage", "topic", "outcome"],
        )
        lag = GaugeMetricFamily(
            "marionette_stream_lag_entries",
            "Entries added to a stream that the stage's group has not read yet.",
            labels=["stage", "topic", "stream"],
        )
        pending = GaugeMetricFamily(
            "marionette_stream_pending_entries",
            "Entries the stage's group has read but not acknowledged (in a handler or stuck).",
            labels=["stage", "topic", "stream"],
        )
        dead = GaugeMetricFamily(
            "marionette_dead_letter_entries",
            "Entries waiting in a topic's dead-letter stream (see `marionette dlq list`).",
            labels=["topic"],
        )
        redis_up = GaugeMetricFamily(
            "marionette_redis_up",
            "1 when the stage's Redis answered this scrape.",
            labels=["stage"],
        )
        dead_topics: set[str] = set()
        for runtime in runtimes:
            for topic, counts in runtime.consumer_counts().items():
                for outcome, value in _outcomes(counts):
                    consumed.add_metric([runtime.group, topic, outcome], value)
            try:
                self._backlog(runtime, lag, pending)
                client = self._client(runtime)
                for topic, stream in runtime.dead_letter_streams().items():
                    if topic not in dead_topics:
                        dead_topics.add(topic)
                        dead.add_metric([topic], int(client.xlen(stream)))
                redis_up.add_metric([runtime.group], 1)
            except REDIS_DOWN as exc:
                log.debug("metrics: Redis did not answer: %s", exc)
                redis_up.add_metric([runtime.group], 0)
        yield from (consumed, lag, pending, dead, redis_up)

    def _backlog(
        self, runtime: WatchedRuntime, lag: GaugeMetricFamily, pending: GaugeMetricFamily
    ) -> None:
        client = self._client(runtime)
        for topic, stream in runtime.consumed_streams():
            try:
                groups = client.xinfo_groups(stream)
            except redis.ResponseError:
                continue  # the stream does not exist yet
            for group in groups:
                if _text(group["name"]) != runtime.group:
                    continue
                labels = [runtime.group, topic, stream]
                pending.add_metric(labels, int(group["pending"]))
                lag.add_metric(labels, _lag(client, stream, group))


LAG_COUNT_LIMIT = 10_000


def _lag(client: "redis.Redis | redis.RedisCluster", stream: str, group: dict[str, object]) -> int:
    known = group.get("lag")
    if known is not None:
        return int(str(known))
    # Redis cannot tell after a trim or a deletion: count what follows the group's position.
    after = f"({_text(group['last-delivered-id'])}"  # type: ignore[arg-type]
    return len(client.xrange(stream, min=after, count=LAG_COUNT_LIMIT) or [])


def _outcomes(counts: ConsumerCounts) -> Iterable[tuple[str, int]]:
    yield "handled", counts.handled
    yield "duplicate", counts.duplicates
    yield "stale", counts.stale
    yield "muted", counts.muted
    yield "dead_letter", counts.dead_letters
    yield "dropped", counts.dropped
    yield "retried", counts.retries
    yield "claimed", counts.claimed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


BUS = BusCollector()
REGISTRY.register(BUS)


def watch(runtime: WatchedRuntime) -> None:
    BUS.runtimes.add(runtime)


def unwatch(runtime: WatchedRuntime) -> None:
    BUS.runtimes.discard(runtime)


def serve_metrics(port: int, host: str) -> bool:
    """Serve REGISTRY on http://host:port/metrics, and the stage's health on /healthz and
    /readyz (services/telemetry/health.py), from a daemon thread; False: port taken."""
    try:
        server = make_server(
            host, port, with_health(make_wsgi_app(REGISTRY)),
            ThreadingWSGIServer, handler_class=_SilentHandler,
        )  # fmt: skip
    except OSError as exc:
        log.warning(
            "metrics: cannot listen on %s:%d (%s); no /metrics in this process", host, port, exc
        )
        return False
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /healthz and /readyz", host, port)
    return True
