"""deploy/kubernetes/ checked offline: each object against Kubernetes' own JSON schemas
(kubernetes-validate, strict: an unknown field fails) or KEDA's CRD schema (tests/data/keda/),
and against the code: registered stages, partition streams and consumer groups, settings,
Redis users."""

import importlib.util
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft7Validator
from kubernetes_validate.utils import latest_version

from contracts.topics import ALL_TOPICS
from services.bus.acl import USERS, env_file, new_passwords, password_variable
from services.bus.partitions import partition_stream, topic_of_stream
from services.bus.runtime import STOP_GRACE_S
from services.registry import STAGES, stage_class
from services.settings import load_settings
from services.settings_reference import _classes
from tests.unit.deploy_manifests import (
    ENTRY_POINTS,
    KUBERNETES,
    REPO,
    WORK_TOPICS,
    Object,
    build,
    compose_stages,
    documents,
    known_variables,
    kubectl_kustomize,
    listed,
    named,
    of_kind,
)

KUBERNETES_VERSIONS = ("1.30", latest_version())
"""The oldest Kubernetes the README promises, and the newest kubernetes-validate knows."""
KEDA_SCHEMAS = REPO / "tests" / "data" / "keda" / "keda-v2.20.2-schemas.yaml"
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
EXAMPLE_SECRET = KUBERNETES / "secret.example.yaml"
UNLISTED = {EXAMPLE_SECRET}  # an example, never applied (it would set known passwords)

NOT_SCALED = {"monitor", "gateway"}  # a log of the bus; consumes nothing

# What KEDA v2.20.2 reads (pkg/scalers/redis_streams_scaler.go, redis_scaler.go): a key it
# does not know is ignored, so a misspelt one would silently change what is measured.
REDIS_STREAMS_METADATA = {"stream", "consumerGroup", "lagCount", "pendingEntriesCount"}
REDIS_AUTH_PARAMETERS = {"host", "port", "username", "password", "tls", "address"}

NEEDS_KEDA_USER = pytest.mark.xfail(
    "keda" not in USERS,
    reason="services/bus/acl.py has no `keda` user yet (KEDA's lag needs INFO)",
    strict=True,
)
"""Until services/bus/acl.py has the `keda` user these fail as expected; from then on they
must pass (strict: an unexpected pass is a failure, so the mark cannot be forgotten)."""

ENV_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@pytest.fixture(scope="module", params=ENTRY_POINTS, ids=lambda p: p.name)
def objects(request: pytest.FixtureRequest) -> list[Object]:
    return build(request.param)


@pytest.fixture(scope="module")
def default_objects() -> list[Object]:
    return build(KUBERNETES)


def config(objects: list[Object], name: str = "marionette-config") -> dict[str, str]:
    data: dict[str, str] = named(objects, "ConfigMap", name)["data"]
    return data


def stage_deployments(objects: list[Object]) -> dict[str, Object]:
    return {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}


def container(deployment: Object) -> Object:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    found: Object = only
    return found


def scaled_objects_module() -> ModuleType:
    path = KUBERNETES / "keda" / "scaledobjects.py"
    spec = importlib.util.spec_from_file_location("scaledobjects", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- what the kustomizations put together ---------------------------------------------


def test_every_file_is_listed_and_every_folder_is_applied() -> None:
    reached: set[Path] = set()
    pending = [entry.resolve() for entry in ENTRY_POINTS]
    while pending:
        directory = pending.pop()
        reached.add(directory)
        for path in listed(directory):
            assert path.exists(), f"{directory}/kustomization.yaml lists {path}: not there"
            if path.is_dir():
                pending.append(path)
            reached.add(path)
    on_disk = {p.resolve() for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert on_disk - reached == UNLISTED, "a manifest no kustomization lists"
    folders = {p.parent.resolve() for p in KUBERNETES.rglob("kustomization.yaml")}
    assert folders <= reached, "a kustomization no entry point reaches"


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda p: p.name)
def test_built_as_kubectl_kustomize_builds(entry: Path) -> None:
    theirs = kubectl_kustomize(entry)
    if theirs is None:
        pytest.skip("kubectl is not installed: the tests' own build is used alone")

    def keyed(objects: list[Object]) -> dict[tuple[str, str], Object]:
        return {(o["kind"], o["metadata"]["name"]): o for o in objects}

    assert keyed(theirs) == keyed(build(entry))


def test_external_redis_has_no_redis_of_its_own() -> None:
    objects = build(KUBERNETES / "external-redis")
    assert not of_kind(objects, "StatefulSet")
    assert {s["metadata"]["name"] for s in of_kind(objects, "Service")} == {"gateway"}
    assert "svc.cluster.local" not in config(objects, "marionette-redis")["REDIS_HOST"]


# --- schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_objects_match_the_schemas(objects: list[Object], version: str) -> None:
    checked = [*objects, *documents(EXAMPLE_SECRET)]
    for obj in checked:
        if obj["kind"] in KEDA_KINDS:
            continue
        # strict: a field Kubernetes does not know (a typo) fails, as kubectl's own check does.
        kubernetes_validate.validate(obj, version, strict=True)
    assert {o["kind"] for o in checked} - KEDA_KINDS >= {"Deployment", "ConfigMap", "Secret"}


def strict_schema(schema: Any) -> Any:
    """KEDA's schema as the API server applies it with strict field validation: an object
    with listed properties takes no others."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: strict_schema(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


@pytest.fixture(scope="module")
def keda_validators() -> dict[str, tuple[str, jsonschema.protocols.Validator]]:
    schemas = yaml.safe_load(KEDA_SCHEMAS.read_text())
    return {
        kind: (entry["apiVersion"], Draft7Validator(strict_schema(entry["openAPIV3Schema"])))
        for kind, entry in schemas.items()
    }


def test_keda_objects_match_kedas_schemas(
    objects: list[Object], keda_validators: dict[str, tuple[str, jsonschema.protocols.Validator]]
) -> None:
    keda = [o for o in objects if o["kind"] in KEDA_KINDS]
    assert {o["kind"] for o in keda} == KEDA_KINDS
    for obj in keda:
        api_version, validator = keda_validators[obj["kind"]]
        assert obj["apiVersion"] == api_version
        validator.validate(obj)


# --- the stages -------------------------------------------------------------------------


def test_a_deployment_runs_each_stage_compose_runs(objects: list[Object]) -> None:
    deployments = stage_deployments(objects)
    assert set(deployments) == compose_stages()
    for name, deployment in deployments.items():
        stage = container(deployment)
        assert stage["args"] == ["run", name]
        assert name in STAGES
        assert stage["image"] == "marionette:latest"
        assert stage["imagePullPolicy"] == "IfNotPresent"


def test_stages_are_probed_scraped_and_stopped_gently(objects: list[Object]) -> None:
    port = int(config(objects)["MARIONETTE_TELEMETRY_METRICS_PORT"])
    for deployment in stage_deployments(objects).values():
        pod = deployment["spec"]["template"]
        stage = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in stage["ports"]}
        assert ports["metrics"] == port
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert stage[probe]["httpGet"] == {"path": path, "port": "metrics"}
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        # stop() waits STOP_GRACE_S for its loops, then as long for its partitions' workers.
        assert pod["spec"]["terminationGracePeriodSeconds"] > 2 * STOP_GRACE_S + 5
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert stage["securityContext"]["allowPrivilegeEscalation"] is False


def test_each_stage_reaches_redis_as_its_own_user(objects: list[Object]) -> None:
    redis = config(objects, "marionette-redis")
    for name, deployment in stage_deployments(objects).items():
        stage = container(deployment)
        defined = {key for source in stage.get("envFrom", []) for key in _env_from(objects, source)}
        env = {}
        for variable in stage["env"]:
            # Kubernetes expands $(NAME) only from variables defined before this one.
            for reference in ENV_REFERENCE.findall(variable.get("value", "")):
                assert reference in defined, f"{name}: $({reference}) before it is defined"
            defined.add(variable["name"])
            env[variable["name"]] = variable
        password = password_variable(name)
        assert name in USERS
        assert env[password]["valueFrom"]["secretKeyRef"] == {
            "name": "marionette-secrets", "key": password
        }  # fmt: skip
        expected = f"$(REDIS_SCHEME)://{name}:$({password})@$(REDIS_HOST):$(REDIS_PORT)/0"
        assert env["REDIS_URL"]["value"] == expected
        for part in ("REDIS_SCHEME", "REDIS_HOST", "REDIS_PORT"):
            assert env[part]["valueFrom"]["configMapKeyRef"]["key"] in redis
        secrets = {
            v["valueFrom"]["secretKeyRef"]["key"]
            for v in stage["env"]
            if "secretKeyRef" in v.get("valueFrom", {})
        }
        assert secrets - {"MARIONETTE_GATEWAY_OPERATOR_KEY"} == {password}, "only its own"


def _env_from(objects: list[Object], source: Object) -> set[str]:
    if "configMapRef" in source:
        return set(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    return set()


def test_the_gateway_is_behind_a_service_with_its_key(objects: list[Object]) -> None:
    gateway = container(stage_deployments(objects)["gateway"])
    service = named(objects, "Service", "gateway")
    (port,) = service["spec"]["ports"]
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert service["spec"]["type"] == "ClusterIP"
    assert port["port"] == ports[port["targetPort"]] == 8765
    assert str(port["port"]) == config(objects)["MARIONETTE_GATEWAY_PORT"]
    assert (
        service["spec"]["selector"]
        == stage_deployments(objects)["gateway"]["spec"]["selector"]["matchLabels"]
    )
    (key,) = [v for v in gateway["env"] if v["name"] == "MARIONETTE_GATEWAY_OPERATOR_KEY"]
    assert key["valueFrom"]["secretKeyRef"]["name"] == "marionette-secrets"


# --- settings and secrets ----------------------------------------------------------------


def test_every_setting_in_the_config_map_exists(objects: list[Object]) -> None:
    unknown = set(config(objects)) - known_variables()
    assert not unknown, f"not settings of any stage (docs/settings.md): {unknown}"


def test_the_settings_accept_the_config_maps_values(
    default_objects: list[Object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no marionette.toml
    for name in [n for n in os.environ if n.startswith("MARIONETTE_") or n == "REDIS_URL"]:
        monkeypatch.delenv(name)
    for name, value in config(default_objects).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MARIONETTE_GATEWAY_OPERATOR_KEY", "k" * 32)  # from the Secret
    for _, cls in _classes():
        load_settings(cls)  # raises, naming the variable, on a bad value


def test_model_threads_fit_the_cpu_limits(default_objects: list[Object]) -> None:
    settings = config(default_objects)
    deployments = stage_deployments(default_objects)
    for stage, variable in (("asr", "MARIONETTE_ASR_CPU_THREADS"),
                            ("policy", "MARIONETTE_POLICY_THREADS"),
                            ("tts", "MARIONETTE_TTS_PIPER_THREADS")):  # fmt: skip
        resources = container(deployments[stage])["resources"]
        assert int(settings[variable]) <= _cores(resources["requests"]["cpu"])
        assert _cores(resources["requests"]["cpu"]) <= _cores(resources["limits"]["cpu"])


def _cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@NEEDS_KEDA_USER
def test_the_example_secret_is_what_redis_acl_new_env_makes() -> None:
    (secret,) = documents(EXAMPLE_SECRET)
    lines = env_file(new_passwords()).splitlines()
    made = {line.split("=", 1)[0] for line in lines if not line.startswith("#")}
    assert set(secret["stringData"]) == made


def test_secret_keys_referenced_exist(objects: list[Object]) -> None:
    (secret,) = documents(EXAMPLE_SECRET)
    text = yaml.safe_dump(objects)
    referenced = set(re.findall(r"key: (\S+)\n\s+name: marionette-secrets", text))
    referenced |= set(re.findall(r"name: marionette-secrets\n\s+key: (\S+)", text))
    assert referenced, "no object reads the Secret?"
    assert referenced <= set(secret["stringData"])


# --- Redis --------------------------------------------------------------------------------


def test_redis_runs_as_compose_runs_it(default_objects: list[Object]) -> None:
    statefulset = named(default_objects, "StatefulSet", "redis")
    pod = statefulset["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert init["image"] == "marionette:latest"
    assert init["args"] == ["redis-acl", "--out", "/acl/users.acl"]
    assert init["envFrom"] == [{"secretRef": {"name": "marionette-secrets"}}]
    assert server["image"] == "redis:7-alpine"
    args = " ".join(server["args"])
    for option in ("--appendonly yes", "--appendfsync always", "--aclfile /acl/users.acl"):
        assert option in args
    assert "health" in USERS
    assert "--user health" in str(server["readinessProbe"])
    mounts = {m["name"]: m["mountPath"] for m in [*init["volumeMounts"], *server["volumeMounts"]]}
    assert mounts["acl"] == "/acl"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == "/data"


def test_the_redis_host_is_the_redis_service(default_objects: list[Object]) -> None:
    redis = config(default_objects, "marionette-redis")
    (port,) = named(default_objects, "Service", "redis")["spec"]["ports"]
    namespace = named(default_objects, "Service", "redis")["metadata"]["namespace"]
    # A full name: KEDA's operator resolves it from its own namespace.
    assert redis["REDIS_HOST"] == f"redis.{namespace}.svc.cluster.local"
    assert redis["REDIS_PORT"] == str(port["port"])


def test_tls_is_on_for_both_the_stages_and_keda_or_for_neither(objects: list[Object]) -> None:
    redis = config(objects, "marionette-redis")
    assert (redis["REDIS_SCHEME"], redis["REDIS_TLS"]) in {
        ("redis", "disable"),
        ("rediss", "enable"),
    }


# --- lag-based scaling ----------------------------------------------------------------------


def test_scaled_objects_are_generated_from_the_partitions() -> None:
    module = scaled_objects_module()
    text = (KUBERNETES / "keda" / "scaledobjects.yaml").read_text()
    assert text == module.render(module.configured_partitions()), (
        "stale: run .venv/bin/python deploy/kubernetes/keda/scaledobjects.py"
    )


def test_each_stage_scales_on_the_partition_streams_of_its_work(objects: list[Object]) -> None:
    partitions = int(config(objects)["MARIONETTE_PARTITIONS"])
    deployments = stage_deployments(objects)
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(objects, "ScaledObject")}
    assert set(scaled) == set(deployments) - NOT_SCALED == set(WORK_TOPICS)
    (authentication,) = of_kind(objects, "TriggerAuthentication")
    for stage, scaled_object in scaled.items():
        spec = scaled_object["spec"]
        assert "replicas" not in deployments[stage]["spec"], "KEDA owns the count"
        assert spec["minReplicaCount"] == 1
        assert spec["maxReplicaCount"] <= partitions, "a replica past the partitions holds none"
        consumed = {c.topic.name for c in stage_class(stage).consumers() if c.topic.ordered}
        target = spec["advanced"]["scalingModifiers"]["target"]
        streams: dict[str, set[str]] = {"lagCount": set(), "pendingEntriesCount": set()}
        for trigger in spec["triggers"]:
            metadata = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert set(metadata) <= REDIS_STREAMS_METADATA, set(metadata) - REDIS_STREAMS_METADATA
            assert trigger["authenticationRef"]["name"] == authentication["metadata"]["name"]
            # Without the group KEDA would count the whole stream (XLEN).
            assert metadata["consumerGroup"] == stage
            (count,) = set(metadata) & set(streams)
            assert metadata[count] == target
            assert int(target) > 0
            topic = topic_of_stream(metadata["stream"])
            assert topic is not None, metadata["stream"]
            assert topic.name in consumed, metadata["stream"]
            streams[count].add(metadata["stream"])
        expected = {partition_stream(t, n) for t in WORK_TOPICS[stage] for n in range(partitions)}
        assert streams["lagCount"] == streams["pendingEntriesCount"] == expected
        names = [t["name"] for t in spec["triggers"]]
        formula = spec["advanced"]["scalingModifiers"]["formula"]
        assert sorted(name.strip() for name in formula.split("+")) == sorted(set(names))
        assert len(names) == len(set(names))


def test_work_topics_are_ordered_topics() -> None:
    ordered = {t.name for t in ALL_TOPICS if t.ordered}
    assert set().union(*WORK_TOPICS.values()) <= ordered


@NEEDS_KEDA_USER
def test_keda_reads_redis_as_a_user_of_the_acl(objects: list[Object]) -> None:
    (authentication,) = of_kind(objects, "TriggerAuthentication")
    redis = config(objects, "marionette-redis")
    spec = authentication["spec"]
    parameters = {
        r["parameter"]: r for r in [*spec["configMapTargetRef"], *spec["secretTargetRef"]]
    }
    assert set(parameters) <= REDIS_AUTH_PARAMETERS
    for reference in spec["configMapTargetRef"]:
        assert reference["name"] == "marionette-redis"
        assert reference["key"] in redis
    user = redis[parameters["username"]["key"]]
    assert parameters["password"]["key"] == password_variable(user)
    assert user in USERS, (
        f"services/bus/acl.py has no Redis user {user!r} for KEDA (it needs INFO, which "
        "no stage user may run)"
    )
