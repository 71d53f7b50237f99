"""deploy/nomad/marionette.nomad.hcl parsed with python-hcl2 (there is no `nomad` to run
`nomad job validate`) and checked against the code and the Kubernetes manifests: registered
stages, settings, Redis users, health checks, and scaling on the same backlog as KEDA's."""

import os
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hcl2 import SerializationOptions

from services.bus.acl import USERS, password_variable
from services.bus.partitions import topic_of_stream
from services.bus.runtime import STOP_GRACE_S
from services.registry import STAGES, stage_class
from services.settings import load_settings
from services.settings_reference import _classes
from services.telemetry import metrics
from tests.unit.deploy_manifests import (
    KUBERNETES,
    REPO,
    WORK_TOPICS,
    build,
    compose_stages,
    known_variables,
    named,
    of_kind,
)

JOB_FILE = REPO / "deploy" / "nomad" / "marionette.nomad.hcl"
PARSE = SerializationOptions(
    with_comments=False, explicit_blocks=False, preserve_heredocs=False, strip_string_quotes=True
)
PATH_SETTINGS = {"MARIONETTE_TELEMETRY_TRACE_DIR", "MARIONETTE_PLAYBACK_WAV_DIR"}
"""Where files go differs (Nomad's alloc dir, Kubernetes' volumes); every other setting the
two set must agree."""
VARIABLES_PATH = "nomad/jobs/marionette"  # a task may read its job's variables, no others

Block = dict[str, Any]


@pytest.fixture(scope="module")
def parsed() -> Block:
    with JOB_FILE.open() as file:
        document: Block = hcl2.load(file, serialization_options=PARSE)
    return document


@pytest.fixture(scope="module")
def groups(parsed: Block) -> dict[str, Block]:
    ((name, job),) = [next(iter(j.items())) for j in parsed["job"]]
    assert name == "marionette"
    return {n: body for g in job["group"] for n, body in g.items()}


@pytest.fixture(scope="module")
def kubernetes() -> list[Block]:
    return build(KUBERNETES)


def only(blocks: list[Block]) -> Block:
    (block,) = blocks
    return block


def tasks(group: Block) -> dict[str, Block]:
    return {n: body for t in group["task"] for n, body in t.items()}


def stage_groups(groups: dict[str, Block]) -> dict[str, Block]:
    return {n: g for n, g in groups.items() if n != "redis"}


def template_text(task: Block) -> str:
    # python-hcl2 gives a heredoc as an escaped string
    text: str = only(task["template"])["data"]
    return text.replace('\\"', '"')


def test_the_image_is_a_variable_with_the_default_image(parsed: Block) -> None:
    variables = {n: body for v in parsed["variable"] for n, body in v.items()}
    assert variables["image"]["default"] == "marionette:latest"


def test_a_group_runs_each_stage_compose_runs(groups: dict[str, Block]) -> None:
    assert set(stage_groups(groups)) == compose_stages()
    for name, group in stage_groups(groups).items():
        task = tasks(group)[name]
        config = only(task["config"])
        assert name in STAGES
        assert task["driver"] == "docker"
        assert config["image"] == "${var.image}"
        assert config["args"] == ["run", name]
        # stop() waits STOP_GRACE_S for its loops, then as long for its partitions' workers.
        assert _seconds(task["kill_timeout"]) > 2 * STOP_GRACE_S + 5


def _seconds(duration: str) -> float:
    found = re.fullmatch(r"(\d+)([sm])", duration)
    assert found is not None, duration
    return int(found[1]) * (60 if found[2] == "m" else 1)


def test_stages_are_checked_on_readyz(groups: dict[str, Block]) -> None:
    for name, group in stage_groups(groups).items():
        env = only(tasks(group)[name]["env"])
        ports = {n: body for p in only(group["network"])["port"] for n, body in p.items()}
        assert ports["metrics"]["to"] == int(env["MARIONETTE_TELEMETRY_METRICS_PORT"])
        assert env["MARIONETTE_TELEMETRY_METRICS_HOST"] == "0.0.0.0"
        (service,) = [s for s in group["service"] if s["port"] == "metrics"]
        check = only(service["check"])
        assert (check["type"], check["path"]) == ("http", "/readyz")
        assert service["provider"] == "nomad"


def test_every_env_name_is_a_setting_and_agrees_with_kubernetes(
    groups: dict[str, Block], kubernetes: list[Block]
) -> None:
    config_map = named(kubernetes, "ConfigMap", "marionette-config")["data"]
    for name, group in stage_groups(groups).items():
        env = only(tasks(group)[name]["env"])
        unknown = set(env) - known_variables()
        assert not unknown, f"{name}: not settings (docs/settings.md): {unknown}"
        for variable in set(env) & set(config_map) - PATH_SETTINGS:
            assert env[variable] == config_map[variable], f"{name}: {variable}"


def test_the_settings_accept_each_tasks_values(
    groups: dict[str, Block], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no marionette.toml
    for name in [n for n in os.environ if n.startswith("MARIONETTE_") or n == "REDIS_URL"]:
        monkeypatch.delenv(name)
    for name, group in stage_groups(groups).items():
        with monkeypatch.context() as task_env:
            for variable, value in only(tasks(group)[name]["env"]).items():
                task_env.setenv(variable, str(value))
            task_env.setenv("MARIONETTE_GATEWAY_OPERATOR_KEY", "k" * 32)  # the template's
            for _, cls in _classes():
                load_settings(cls)  # raises, naming the variable, on a bad value


def test_each_stage_reaches_redis_as_its_own_user(groups: dict[str, Block]) -> None:
    redis_service = only(groups["redis"]["service"])["name"]
    for name, group in stage_groups(groups).items():
        task = tasks(group)[name]
        text = template_text(task)
        assert only(task["template"])["env"] is True
        assert f'nomadVar "{VARIABLES_PATH}"' in text
        (password,) = re.findall(r"\$password := \.(\w+)", text)
        assert f'nomadService "{redis_service}"' in text
        (user,) = re.findall(r"REDIS_URL=redis://(\w+):\{\{ \$password \}\}@", text)
        assert user == name
        assert user in USERS
        assert password == password_variable(user)
        keys = set(re.findall(r"\{\{ \.([A-Z][A-Z0-9_]+) \}\}", text))  # other variables
        assert keys == ({"MARIONETTE_GATEWAY_OPERATOR_KEY"} if name == "gateway" else set())


def test_redis_runs_as_compose_runs_it(groups: dict[str, Block]) -> None:
    redis_tasks = tasks(groups["redis"])
    writer, server = redis_tasks["redis-acl"], redis_tasks["redis"]
    assert only(writer["lifecycle"])["hook"] == "prestart"
    assert only(writer["config"])["image"] == "${var.image}"
    (acl_path,) = re.findall(r"--out (\S+)", " ".join(only(writer["config"])["args"]))
    assert acl_path.startswith("/alloc/"), "the allocation's shared folder"
    assert f'nomadVar "{VARIABLES_PATH}"' in template_text(writer)
    config = only(server["config"])
    assert config["image"] == "redis:7-alpine"
    args = " ".join(config["args"])
    for option in ("--appendonly yes", "--appendfsync always", f"--aclfile {acl_path}"):
        assert option in args
    service = only(groups["redis"]["service"])
    assert only(service["check"])["type"] == "tcp"


def test_stages_scale_on_the_backlog_keda_scales_them_on(
    groups: dict[str, Block], kubernetes: list[Block]
) -> None:
    partitions = int(named(kubernetes, "ConfigMap", "marionette-config")["data"][
        "MARIONETTE_PARTITIONS"
    ])  # fmt: skip
    keda = {s["metadata"]["name"]: s["spec"] for s in of_kind(kubernetes, "ScaledObject")}
    scaled = {n: g for n, g in stage_groups(groups).items() if "scaling" in g}
    assert set(scaled) == set(keda) == set(WORK_TOPICS)
    exported = Path(metrics.__file__).read_text()
    for name, group in scaled.items():
        scaling = only(group["scaling"])
        assert scaling["min"] == 1 <= group["count"] <= scaling["max"] <= partitions
        ((_, check),) = only(only(scaling["policy"])["check"]).items()
        assert check["source"] == "prometheus"
        query = check["query"]
        for metric in ("marionette_stream_lag_entries", "marionette_stream_pending_entries"):
            assert metric in query
            assert f'"{metric}"' in exported, f"{metric}: no stage exports it"
        assert set(re.findall(r'stage="(\w+)"', query)) == {name}
        topics = set()
        for operator, value in re.findall(r'topic(=~?)"([^"]+)"', query):
            topics |= set(value.split("|")) if operator == "=~" else {value}
        consumed = {c.topic.name for c in stage_class(name).consumers()}
        assert topics == WORK_TOPICS[name]
        assert topics <= consumed
        keda_topics = {
            topic.name
            for t in keda[name]["triggers"]
            if (topic := topic_of_stream(t["metadata"]["stream"])) is not None
        }
        assert topics == keda_topics
        ((_, strategy),) = only(check["strategy"]).items()
        assert str(strategy["target"]) == keda[name]["advanced"]["scalingModifiers"]["target"]


def test_the_secrets_come_from_the_jobs_variables_only() -> None:
    text = JOB_FILE.read_text()
    assert set(re.findall(r'nomadVar "([^"]+)"', text)) == {VARIABLES_PATH}
    assert "REDIS_PASSWORD_" not in re.sub(r"\{\{[^}]*\}\}", "", text), "a password in clear"


def test_the_secret_example_names_the_same_keys_as_the_templates() -> None:
    secret = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())
    used = set(re.findall(r"\.((?:REDIS_PASSWORD|MARIONETTE)_\w+)", JOB_FILE.read_text()))
    assert used <= set(secret["stringData"])
