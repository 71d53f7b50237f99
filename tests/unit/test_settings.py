"""Bus settings: environment over marionette.toml over defaults, and errors a person can act on."""

import os
from pathlib import Path

import pytest

from services.bus.settings import BusSettings, load_bus_settings
from services.settings import ConfigError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MARIONETTE_* or REDIS_URL from the developer's shell, no marionette.toml around."""
    for name in list(os.environ):
        if name.upper().startswith("MARIONETTE_") or name.upper() == "REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path.write_text(text)
    monkeypatch.setenv("MARIONETTE_CONFIG", str(path))
    return path


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as exc_info:
        load_bus_settings()
    return str(exc_info.value)


# --- sources ------------------------------------------------------------------------------


def test_defaults_without_environment_or_file() -> None:
    settings = load_bus_settings()
    assert settings.redis_url is None  # an embedded server is started
    assert settings.partitions == BusSettings.model_fields["partitions"].default
    assert settings.stream_maxlen == {}


def test_reads_marionette_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARIONETTE_PARTITIONS", "16")
    monkeypatch.setenv("MARIONETTE_HANDLER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("MARIONETTE_GROUP_START", "$")
    monkeypatch.setenv("MARIONETTE_REDIS_SERVER", "/opt/redis/bin/redis-server")
    monkeypatch.setenv("MARIONETTE_REDIS_DIR", "/var/lib/marionette/redis")
    monkeypatch.setenv("MARIONETTE_REPLICA_ID", "tts-2")
    monkeypatch.setenv("MARIONETTE_CONTROL_HISTORY_S", "60")

    settings = load_bus_settings()

    assert settings.partitions == 16
    assert settings.handler_timeout_s == 2.5
    assert settings.group_start == "$"
    assert settings.redis_server == "/opt/redis/bin/redis-server"
    assert settings.redis_dir == Path("/var/lib/marionette/redis")
    assert settings.replica_id == "tts-2"
    assert settings.control_history_s == 60


def test_a_removed_setting_left_in_the_environment_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MARIONETTE_CLAIM_IDLE_MS is gone (a partition takeover claims everything pending at
    once); an old deployment that still sets it starts as before."""
    monkeypatch.setenv("MARIONETTE_CLAIM_IDLE_MS", "2500")
    settings = load_bus_settings()
    assert not hasattr(settings, "claim_idle_ms")


def test_reads_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6380/2")
    assert load_bus_settings().redis_url == "redis://cache.internal:6380/2"


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://user:pw@host:6380", "unix:///tmp/redis.sock"]
)
def test_accepts_redis_url_schemes(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    assert load_bus_settings().redis_url == url


def test_marionette_redis_url_is_also_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARIONETTE_REDIS_URL", "redis://other:1")
    assert load_bus_settings().redis_url == "redis://other:1"


def test_keyword_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARIONETTE_PARTITIONS", "16")
    monkeypatch.setenv("REDIS_URL", "redis://env:1")
    settings = load_bus_settings(partitions=4, redis_url="redis://override:2")
    assert settings.partitions == 4
    assert settings.redis_url == "redis://override:2"


def test_reads_the_config_file_named_by_marionette_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    write_config(
        config_dir / "bus.toml",
        'redis_url = "redis://from-file:6379"\n'
        "partitions = 4\n"
        "lease_ms = 5000\n"
        "[stream_maxlen]\n"
        '"audio.frame" = 30000\n',
        monkeypatch,
    )

    settings = load_bus_settings()

    assert settings.redis_url == "redis://from-file:6379"
    assert settings.partitions == 4
    assert settings.lease_ms == 5000
    assert settings.stream_maxlen == {"audio.frame": 30000}


def test_reads_marionette_toml_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "marionette.toml").write_text("partitions = 3\n")
    assert load_bus_settings().partitions == 3


def test_environment_overrides_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_config(
        tmp_path / "bus.toml",
        'redis_url = "redis://from-file:1"\npartitions = 4\nlease_ms = 5000\n',
        monkeypatch,
    )
    monkeypatch.setenv("MARIONETTE_PARTITIONS", "32")
    monkeypatch.setenv("REDIS_URL", "redis://from-env:2")

    settings = load_bus_settings()

    assert settings.partitions == 32
    assert settings.redis_url == "redis://from-env:2"
    assert settings.lease_ms == 5000  # not in the environment: the file's value stands


# --- stream_maxlen ------------------------------------------------------------------------


def test_stream_maxlen_is_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARIONETTE_STREAM_MAXLEN", '{"audio.frame": 30000, "control": 500}')
    settings = load_bus_settings()
    assert settings.stream_maxlen == {"audio.frame": 30000, "control": 500}
    assert settings.maxlen_for("audio.frame", 10) == 30000
    assert settings.maxlen_for("control", 10) == 500


def test_maxlen_for_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARIONETTE_STREAM_MAXLEN", '{"audio.frame": 30000}')
    settings = load_bus_settings()
    assert settings.maxlen_for("asr.final", 10_000) == 10_000
    monkeypatch.delenv("MARIONETTE_STREAM_MAXLEN")
    assert load_bus_settings().maxlen_for("audio.frame", 77) == 77


def test_stream_maxlen_with_a_non_integer_value_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = config_error(monkeypatch, MARIONETTE_STREAM_MAXLEN='{"audio.frame": "lots"}')
    assert "MARIONETTE_STREAM_MAXLEN" in message
    assert "integer" in message


def test_stream_maxlen_that_is_not_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, MARIONETTE_STREAM_MAXLEN="{audio.frame: 30000")
    assert "MARIONETTE_STREAM_MAXLEN" in message


def test_stream_maxlen_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, MARIONETTE_STREAM_MAXLEN='{"audio.frame": -5}')
    assert "MARIONETTE_STREAM_MAXLEN" in message


# --- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("MARIONETTE_PARTITIONS", "0", "greater than or equal to 1"),
        ("MARIONETTE_PARTITIONS", "257", "less than or equal to 256"),
        ("MARIONETTE_PARTITIONS", "eight", "valid integer"),
        ("MARIONETTE_HANDLER_TIMEOUT_S", "0", "greater than 0"),
        ("MARIONETTE_REPLICA_ID", "tts 2", "should match pattern"),
        ("MARIONETTE_CONTROL_HISTORY_S", "-1", "greater than or equal to 0"),
        ("MARIONETTE_LEASE_MS", "-1", "greater than or equal to 300"),
        ("MARIONETTE_MAX_DELIVERIES", "0", "greater than or equal to 1"),
        ("MARIONETTE_BLOCK_MS", "1.5", "valid integer"),
        ("MARIONETTE_GROUP_START", "latest", "should match pattern"),
        ("MARIONETTE_MAX_MESSAGE_BYTES", "100", "greater than or equal to 1024"),
        ("REDIS_URL", "http://localhost:6379", "should match pattern"),
        ("REDIS_URL", "localhost:6379", "should match pattern"),
    ],
)
def test_bad_value_names_the_variable_and_the_problem(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    message = config_error(monkeypatch, **{name: value})
    assert f"setting {name} " in message
    assert repr(value) in message
    assert problem in message


def test_every_bad_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(
        monkeypatch, MARIONETTE_PARTITIONS="0", REDIS_URL="http://x", MARIONETTE_LEASE_MS="1"
    )
    for name in ("MARIONETTE_PARTITIONS", "REDIS_URL", "MARIONETTE_LEASE_MS"):
        assert name in message


def test_error_explains_what_the_setting_means(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, MARIONETTE_PARTITIONS="0")
    assert (BusSettings.model_fields["partitions"].description or "?") in message


def test_bad_value_in_the_config_file_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_config(tmp_path / "bus.toml", 'partitions = "many"\n', monkeypatch)
    message = config_error(monkeypatch)
    assert "MARIONETTE_PARTITIONS" in message
    assert "'partitions'" in message
    assert str(path) in message


def test_bad_keyword_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MARIONETTE_PARTITIONS"):
        load_bus_settings(partitions=0)


def test_config_file_with_bad_syntax_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_config(tmp_path / "bus.toml", "partitions = = 4\n", monkeypatch)
    message = config_error(monkeypatch)
    assert str(path) in message


def test_settings_are_frozen() -> None:
    settings = load_bus_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.partitions = 2  # type: ignore[misc]
