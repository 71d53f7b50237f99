"""How every stage talks to Redis: MARIONETTE_* (and REDIS_URL), or the top of marionette.toml."""

from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator

from contracts.topics import ALL_TOPICS
from services.settings import MarionetteSettings, load_settings


class BusSettings(MarionetteSettings):
    """How every stage talks to Redis. Each field is MARIONETTE_<NAME> in the environment."""

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "MARIONETTE_REDIS_URL", "redis_url"),
        pattern=r"^(redis|rediss|unix)://",
        description="Redis to use; unset starts an embedded server for this process tree.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL names a node of a Redis Cluster: stages use a cluster client "
        "(every key of a partition hashes to its slot; services/bus/partitions.py).",
    )
    redis_server: str | None = Field(
        default=None, description="Path of the redis-server binary for the embedded server."
    )
    redis_dir: Path = Field(
        default=Path(".marionette/redis"),
        description="Where the embedded Redis keeps its append-only file, so memory, persona "
        "and unfinished turns survive a restart of `marionette up`.",
    )
    replica_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._\-]{1,64}$",
        description="This process's name among the stage's replicas; unique among live ones. "
        "A replica restarted under the same name takes its partitions back at once "
        "(`marionette up` names them tts-1, tts-2...); unset: stage-host-pid.",
    )
    partitions: int = Field(
        default=8, ge=1, le=256, description="Partition streams per ordered topic."
    )
    lease_ms: int = Field(
        default=2000,
        ge=300,
        le=600_000,
        description="A partition owner that has not renewed its lease this long is dead; "
        "another replica takes the partition over.",
    )
    max_deliveries: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Attempts at a message (handler errors, timeouts, and crashes while it "
        "was being handled) before it goes to dead letters.",
    )
    handler_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        description="A handler running longer than this without publishing is stopped and "
        "counted as a failed attempt.",
    )
    retry_backoff_ms: int = Field(
        default=100, ge=0, le=60_000, description="First retry delay; doubles each attempt."
    )
    read_count: int = Field(default=64, ge=1, le=10_000, description="Entries per read.")
    block_ms: int = Field(default=100, ge=1, le=60_000, description="XREADGROUP BLOCK time.")
    queue_size: int = Field(
        default=256, ge=1, le=100_000, description="In-process queue bound per partition."
    )
    dedup_ttl_s: int = Field(
        default=3600, ge=1, description="How long handled message ids and stage state are kept."
    )
    control_history_s: int = Field(
        default=600,
        ge=0,
        description="A starting replica reads interrupts this far back on `control`, so late "
        "messages of turns interrupted while it was down are still dropped.",
    )
    group_start: str = Field(
        default="0",
        pattern=r"^(0|\$)$",
        description="Where a new consumer group starts: 0 (keep what is there) or $ (only new).",
    )
    stream_maxlen: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description='Per-topic MAXLEN ~ overrides, e.g. {"audio.frame": 30000} (JSON in env).',
    )
    max_message_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Larger entries go to dead letters."
    )

    @field_validator("stream_maxlen")
    @classmethod
    def _known_topics(cls, value: dict[str, int]) -> dict[str, int]:
        known = {topic.name for topic in ALL_TOPICS}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"unknown topic(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return value

    def maxlen_for(self, topic_name: str, default: int) -> int:
        return self.stream_maxlen.get(topic_name, default)


def load_bus_settings(**overrides: Any) -> BusSettings:
    return load_settings(BusSettings, **overrides)
