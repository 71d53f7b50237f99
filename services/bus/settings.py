"""Bus settings: environment variables (MARIONETTE_*, and REDIS_URL) over marionette.toml."""

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from contracts.topics import ALL_TOPICS

ENV_PREFIX = "MARIONETTE_"
CONFIG_FILE_ENV = "MARIONETTE_CONFIG"


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting and how to fix it."""


def _config_file() -> Path:
    return Path(os.environ.get(CONFIG_FILE_ENV, "marionette.toml"))


def _toml_table(table: str | None) -> dict[str, Any]:
    path = _config_file()
    if not path.is_file():
        return {}
    with path.open("rb") as file:
        data = tomllib.load(file)
    section = data.get(table, {}) if table else data
    return section if isinstance(section, dict) else {}


class MarionetteSettings(BaseSettings):
    """Environment variables over marionette.toml; each stage's settings derive from this."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", validate_default=True, frozen=True
    )
    toml_table: ClassVar[str | None] = None
    """The [table] of marionette.toml these settings read; None for top-level keys."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = InitSettingsSource(settings_cls, init_kwargs=_toml_table(cls.toml_table))
        return (init_settings, env_settings, toml)


class BusSettings(MarionetteSettings):
    """How every stage talks to Redis. Each field is MARIONETTE_<NAME> in the environment."""

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "MARIONETTE_REDIS_URL", "redis_url"),
        pattern=r"^(redis|rediss|unix)://",
        description="Redis to use; unset starts an embedded server for this process tree.",
    )
    redis_server: str | None = Field(
        default=None, description="Path of the redis-server binary for the embedded server."
    )
    partitions: int = Field(
        default=8, ge=1, le=256, description="Partition streams per ordered topic."
    )
    claim_idle_ms: int = Field(
        default=1500,
        ge=50,
        le=600_000,
        description="A pending message idle this long is claimed from its (dead) consumer.",
    )
    lease_ms: int = Field(
        default=2000,
        ge=300,
        le=600_000,
        description="A partition owner that has not renewed its lease this long is dead.",
    )
    max_deliveries: int = Field(
        default=3, ge=1, le=100, description="Attempts before a message goes to dead letters."
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
        default=3600, ge=1, description="How long a handled message id is remembered."
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


def describe_validation_error(exc: ValidationError, settings_cls: type[MarionetteSettings]) -> str:
    """One line per bad setting, naming the environment variable and the fix."""
    prefix = settings_cls.model_config.get("env_prefix", ENV_PREFIX)
    where = f"[{settings_cls.toml_table}] in " if settings_cls.toml_table else "in "
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]).lower() if err["loc"] else "?"
        env_name = (
            "REDIS_URL (or MARIONETTE_REDIS_URL)"
            if field == "redis_url"
            else f"{prefix}{field.upper()}"
        )
        info = settings_cls.model_fields.get(field)
        meaning = f" ({info.description})" if info and info.description else ""
        lines.append(
            f"setting {env_name} (or '{field}' {where}{_config_file()}) = {err.get('input')!r}: "
            f"{err['msg']}{meaning}"
        )
    return "bad configuration:\n  " + "\n  ".join(lines)


S = TypeVar("S", bound=MarionetteSettings)


def load_settings(settings_cls: type[S], **overrides: Any) -> S:
    """Read the settings, turning a validation error into a ConfigError a person can act on."""
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        raise ConfigError(
            f"{CONFIG_FILE_ENV}={config_file!r} is not a file: point it at a TOML file or unset it"
        )
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, settings_cls)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{_config_file()} is not valid TOML: {exc}") from None
    except SettingsError as exc:
        # pydantic-settings raises this for a complex value (a dict) that is not JSON.
        raise ConfigError(
            f"{exc}: complex settings take JSON, e.g. "
            f"{ENV_PREFIX}STREAM_MAXLEN='{{\"audio.frame\": 30000}}'"
        ) from None


def load_bus_settings(**overrides: Any) -> BusSettings:
    return load_settings(BusSettings, **overrides)
