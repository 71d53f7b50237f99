"""Settings of every part of Marionette: environment variables over marionette.toml.

Each stage's settings derive from MarionetteSettings with their own prefix
(MARIONETTE_TTS_...) and [table]; `load_settings` turns a bad value into a ConfigError that
names the variable and what it accepts. `marionette settings` writes docs/settings.md from
these classes.
"""

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from services.errors import ConfigError

__all__ = ["CONFIG_FILE_ENV", "ENV_PREFIX", "ConfigError", "MarionetteSettings", "load_settings"]

ENV_PREFIX = "MARIONETTE_"
CONFIG_FILE_ENV = "MARIONETTE_CONFIG"


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
