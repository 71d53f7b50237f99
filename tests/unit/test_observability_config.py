"""observability/ can not run here (no Docker engine): check its files statically.

They must agree with each other, with deploy/docker-compose.yml, and with the metrics the
stage processes really export (services.telemetry.metrics and FastStream's middleware).
"""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import CollectorRegistry

from contracts.topics import ALL_TOPICS
from services.registry import STAGES
from services.telemetry.metrics import BUS, REGISTRY, unwatch, watch
from services.telemetry.settings import TelemetrySettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
OBSERVABILITY = ROOT / "observability"
COLLECTOR_CONFIG = OBSERVABILITY / "otel-collector.yaml"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus.yml"
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS = OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"

# Which compose service is which, by image.
IMAGES = {
    "collector": "otel/opentelemetry-collector",
    "jaeger": "jaegertracing/",
    "prometheus": "prom/prometheus",
    "grafana": "grafana/grafana",
}
# Where each image reads its configuration when compose does not say otherwise.
COLLECTOR_DEFAULT_CONFIG = "/etc/otelcol-contrib/config.yaml"
PROMETHEUS_DEFAULT_CONFIG = "/etc/prometheus/prometheus.yml"
JAEGER_OTLP_GRPC_PORT = 4317
PROMTOOL = shutil.which("promtool")

TELEMETRY = "MARIONETTE_TELEMETRY_"
OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def with_defaults(value: Any) -> Any:
    """What compose makes of `${VARIABLE:-default}` when the variable is not set."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    if isinstance(value, dict):
        return {key: with_defaults(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_defaults(item) for item in value]
    return value


def services() -> dict[str, Any]:
    return dict(with_defaults(load_yaml(COMPOSE)["services"]))


def service_named(role: str) -> str:
    """The compose service running IMAGES[role]."""
    names = [
        name
        for name, service in services().items()
        if str(service.get("image", "")).startswith(IMAGES[role])
    ]
    assert len(names) == 1, f"compose runs one {IMAGES[role]} service, not {names}"
    return names[0]


def stage_services() -> dict[str, Any]:
    """Compose services that run `marionette run STAGE`."""
    found = {
        name: service
        for name, service in services().items()
        if "build" in service and service.get("command", [None])[0] == "run"
    }
    assert found, "compose runs at least one stage"
    return found


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind mount (compose resolves from deploy/)."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target = volume["source"], volume["target"]
        else:
            source, target, *_ = volume.split(":")
            if not source.startswith((".", "/", "~")):
                continue  # a named volume
        mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name of each named volume the service mounts."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "volume":
                mounts[volume["target"]] = volume["source"]
            continue
        source, target, *_ = volume.split(":")
        if not source.startswith((".", "/", "~")):
            mounts[target] = source
    return mounts


def container_path(host_path: Path, service: dict[str, Any]) -> PurePosixPath | None:
    """Where host_path shows inside the service's container, if a bind mount carries it."""
    host_path = host_path.resolve()
    for target, source in bind_mounts(service).items():
        if host_path == source:
            return PurePosixPath(target)
        if source in host_path.parents:
            return PurePosixPath(target) / host_path.relative_to(source).as_posix()
    return None


def command_option(service: dict[str, Any], option: str) -> str | None:
    """The value of `--option=VALUE` or `--option VALUE` in the service's command."""
    command = service.get("command") or []
    if isinstance(command, str):
        command = command.split()
    for i, arg in enumerate(command):
        if arg.startswith(f"{option}="):
            return str(arg.split("=", 1)[1])
        if arg == option and i + 1 < len(command):
            return str(command[i + 1])
    return None


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


# --- the series the stage processes export --------------------------------------------------

# How prometheus_client writes each family type's samples: (suffix, labels the suffix adds).
SERIES_SUFFIXES: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "counter": (("_total", frozenset()),),
    "histogram": (("_bucket", frozenset({"le"})), ("_count", frozenset()), ("_sum", frozenset())),
    "gauge": (("", frozenset()),),
}


def exported_series() -> dict[str, frozenset[str]]:
    """Series name -> its label names, for every series a stage's /metrics can show."""
    faststream = CollectorRegistry()
    RedisPrometheusMiddleware(registry=faststream, app_name="x")  # as services.bus does
    series: dict[str, frozenset[str]] = {}
    for registry in (REGISTRY, faststream):
        # prometheus_client keeps label names in _labelnames, both on its metric objects
        # (Histogram, Counter) and on the *MetricFamily objects a custom collector yields.
        object_labels = {
            name: tuple(collector._labelnames)  # type: ignore[attr-defined]
            for collector, names in registry._collector_to_names.items()
            if hasattr(collector, "_labelnames")
            for name in names
        }
        for family in registry.collect():
            labels = getattr(family, "_labelnames", None)
            if labels is None:
                labels = object_labels[family.name]
            assert family.type in SERIES_SUFFIXES, f"{family.name}: type {family.type}"
            for suffix, extra in SERIES_SUFFIXES[family.type]:
                series[family.name + suffix] = frozenset(labels) | extra
    return series


class _Counts:
    handled = duplicates = stale = muted = dead_letters = retries = dropped = claimed = 1


class _Runtime:
    """Just enough of a StageRuntime for the bus collector; it asks nothing of Redis."""

    group = "asr"
    redis_url = "redis://127.0.0.1:1/0"
    redis_cluster = False

    def consumer_counts(self) -> dict[str, _Counts]:
        return {"audio.frame": _Counts()}

    def consumed_streams(self) -> list[tuple[str, str]]:
        return []

    def dead_letter_streams(self) -> dict[str, str]:
        return {}


def consumed_outcomes() -> set[str]:
    """The outcome label values of marionette_consumed_messages_total."""
    runtime = _Runtime()
    watch(runtime)
    try:
        families = list(BUS.collect())
    finally:
        unwatch(runtime)
    samples = [s for f in families if f.name == "marionette_consumed_messages" for s in f.samples]
    assert samples, "the bus collector reports a runtime's counts"
    return {sample.labels["outcome"] for sample in samples}


# --- PromQL, as far as regular expressions go (promtool, where installed, parses it too) ---

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{(?P<matchers>[^}]*)\}")
_MATCHER = re.compile(
    r'(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"'
)
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^)]*)\)"
)
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
# A name not followed by "(" (functions and aggregations are).
_NAME = re.compile(r"(?<![\w:$])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:]|\s*\()")
_KEYWORDS = {"bool", "offset", "and", "or", "unless", "inf", "nan", "Inf", "NaN"}
_PAIRS = {")": "(", "]": "[", "}": "{"}


def metric_names(expr: str) -> set[str]:
    text = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    text = _NUMBER.sub(" ", text)
    return set(_NAME.findall(text)) - _KEYWORDS


def selectors(expr: str) -> Iterator[tuple[str | None, list[tuple[str, str, str]]]]:
    for match in _SELECTOR.finditer(expr):
        matchers = [(m["label"], m["op"], m["value"]) for m in _MATCHER.finditer(match["matchers"])]
        yield match["name"], matchers


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip()
        for match in _GROUPING.finditer(_STRING.sub('""', expr))
        for label in match["labels"].split(",")
        if label.strip()
    }


def balanced(expr: str) -> bool:
    text = _STRING.sub('""', expr)
    if text.count('"') % 2:
        return False  # a string that does not end
    stack: list[str] = []
    for char in text:
        if char in "([{":
            stack.append(char)
        elif char in _PAIRS and (not stack or stack.pop() != _PAIRS[char]):
            return False
    return not stack


# --- the dashboard -----------------------------------------------------------------------------


def dashboards() -> dict[Path, dict[str, Any]]:
    found = {path: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}
    assert found, f"no dashboards in {DASHBOARDS}"
    return found


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)  # a collapsed row keeps its panels inside


def queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query on every dashboard."""
    for dashboard in dashboards().values():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                yield panel.get("title", "?"), target.get("expr", "")


def prometheus_config() -> dict[str, Any]:
    return dict(load_yaml(PROMETHEUS_CONFIG))


def scrape_targets() -> dict[str, set[tuple[str, int]]]:
    """Job name -> (host, port) of every target it scrapes."""
    jobs: dict[str, set[tuple[str, int]]] = {}
    for job in prometheus_config()["scrape_configs"]:
        other_discovery = {key for key in job if key.endswith("_sd_configs")} - {"dns_sd_configs"}
        assert not other_discovery, f"{job['job_name']}: this test reads no {other_discovery}"
        targets = jobs.setdefault(job["job_name"], set())
        for static in job.get("static_configs", []):
            targets.update(host_port(target) for target in static["targets"])
        for dns in job.get("dns_sd_configs", []):
            # A compose service name answers A records (one per replica), no SRV records.
            assert dns.get("type") == "A", f"{job['job_name']}: DNS discovery needs type: A"
            targets.update((name, int(dns["port"])) for name in dns["names"])
    return jobs


def target_labels() -> set[str]:
    """Labels Prometheus puts on every scraped series: job, instance, and relabelled ones."""
    return {"job", "instance"} | {
        relabel["target_label"]
        for job in prometheus_config()["scrape_configs"]
        for relabel in job.get("relabel_configs", [])
        if "target_label" in relabel
    }


def known_series() -> dict[str, frozenset[str]]:
    """What the dashboard may query: the stages' series, and Prometheus's own `up`."""
    return {**exported_series(), "up": frozenset()}


def test_dashboard_queries_only_series_the_stages_export() -> None:
    series = known_series()
    all_queries = list(queries())
    assert all_queries, "the dashboard has queries"
    for title, expr in all_queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        unknown = names - set(series)
        assert not unknown, f"{title}: nothing exports {sorted(unknown)} ({expr!r})"


def test_dashboard_queries_use_labels_their_series_carry() -> None:
    series = known_series()
    scraped = target_labels()
    for title, expr in queries():
        available = set(scraped)
        for name in metric_names(expr) & set(series):
            available |= series[name]
        assert grouping_labels(expr) <= available, f"{title}: {expr!r} groups by a missing label"
        for name, matchers in selectors(expr):
            assert name is not None, f"{title}: name the metric of each selector in {expr!r}"
            carried = series.get(name, frozenset()) | scraped
            for label, _, _ in matchers:
                assert label in carried, f"{title}: {name} has no label {label!r}"


def test_dashboard_label_values_exist() -> None:
    values = {
        "outcome": consumed_outcomes(),
        "topic": {topic.name for topic in ALL_TOPICS},
        "stage": set(STAGES),
        "app_name": set(STAGES),
        "job": set(scrape_targets()),
    }
    assert {"handled", "dead_letter", "dropped", "retried"} <= values["outcome"]
    for title, expr in queries():
        for _, matchers in selectors(expr):
            for label, op, value in matchers:
                if op == "=" and label in values:
                    assert value in values[label], f"{title}: no {label}={value!r} ever"


def test_promql_brackets_balance() -> None:
    for title, expr in queries():
        assert balanced(expr), f"{title}: unbalanced brackets or quotes in {expr!r}"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_config_and_every_query(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    config = subprocess.run(
        [PROMTOOL, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
    # promtool parses PromQL in rule files: make each dashboard query a recording rule.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("expr", "ok"),
    [
        ('sum by (a) (rate(x{b="c"}[1m]))', True),
        ('sum by (a) (rate(x{b="c"}[1m])', False),
        ('rate(x{b="c}[1m])', False),
        ('x{b=")"}', True),
        ("histogram_quantile(0.5, sum by (le) (rate(x_bucket[1m]]))", False),
    ],
)
def test_the_bracket_check_itself(expr: str, ok: bool) -> None:
    assert balanced(expr) is ok


def test_the_metric_name_reader_itself() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, app_name) "
        '(rate(some_seconds_bucket{outcome="x"}[1m]))) / on (job) up{job="y"} * 2e3'
    )
    assert metric_names(expr) == {"some_seconds_bucket", "up"}
    assert grouping_labels(expr) == {"le", "app_name", "job"}


def test_dashboard_datasources_are_provisioned() -> None:
    provisioned = load_yaml(DATASOURCES)["datasources"]
    types = {source["uid"]: source["type"] for source in provisioned}
    defaults = [source["uid"] for source in provisioned if source.get("isDefault")]
    assert defaults == ["prometheus"], "Prometheus is the one default data source"
    for dashboard in dashboards().values():
        for panel in panels(dashboard):
            if panel["type"] == "row":
                continue
            title = panel.get("title")
            targets = panel.get("targets", [])
            for ref in [panel.get("datasource"), *(t.get("datasource") for t in targets)]:
                assert isinstance(ref, dict), f"{title}: name its data source by uid"
                assert ref.get("uid") in types, f"{title}: no data source {ref}"
                assert ref.get("type") in (None, types[ref["uid"]]), f"{title}: wrong type"


def test_dashboard_panels_fit_and_have_ids() -> None:
    for path, dashboard in dashboards().items():
        assert dashboard.get("uid"), path.name
        assert dashboard.get("title"), path.name
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in panels(dashboard):
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{path.name}: {panel.get('title')} is too wide"
            if panel["type"] != "row":
                assert panel.get("targets"), f"{path.name}: {panel.get('title')} shows nothing"
    assert any(d["title"] == "Marionette" for d in dashboards().values())


def test_grafana_data_sources_are_compose_services() -> None:
    hosts = {
        source["uid"]: urlsplit(source["url"]).hostname
        for source in load_yaml(DATASOURCES)["datasources"]
    }
    assert hosts["prometheus"] == service_named("prometheus")
    assert hosts["jaeger"] == service_named("jaeger")


def test_grafana_loads_the_provisioning_and_dashboards() -> None:
    grafana = services()[service_named("grafana")]
    datasources = container_path(DATASOURCES, grafana)
    assert datasources is not None, "compose mounts the data sources into grafana"
    assert datasources.parent == PurePosixPath("/etc/grafana/provisioning/datasources")
    providers_file = container_path(PROVIDERS, grafana)
    assert providers_file is not None, "compose mounts the dashboard providers into grafana"
    assert providers_file.parent == PurePosixPath("/etc/grafana/provisioning/dashboards")

    folders = {
        PurePosixPath(p["options"]["path"])
        for p in load_yaml(PROVIDERS)["providers"]
        if p["type"] == "file"
    }
    for path in dashboards():
        inside = container_path(path, grafana)
        assert inside is not None, f"compose does not mount {path.name} into grafana"
        assert any(folder in inside.parents for folder in folders), f"no provider loads {inside}"

    home = grafana.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home is not None:
        assert PurePosixPath(home) in {container_path(path, grafana) for path in dashboards()}


def test_observability_mounts_point_at_files_in_the_repository() -> None:
    for role in ("collector", "prometheus", "grafana"):
        service = services()[service_named(role)]
        mounts = bind_mounts(service)
        assert mounts, f"{role}: compose mounts its configuration"
        for target, source in mounts.items():
            assert source.exists(), f"{role}: {target} comes from {source}, which does not exist"
            assert ROOT in source.parents, f"{role}: {source} is outside the repository"


def test_collector_and_prometheus_read_the_mounted_config() -> None:
    collector = services()[service_named("collector")]
    config = command_option(collector, "--config") or COLLECTOR_DEFAULT_CONFIG
    assert container_path(COLLECTOR_CONFIG, collector) == PurePosixPath(config)
    prometheus = services()[service_named("prometheus")]
    config = command_option(prometheus, "--config.file") or PROMETHEUS_DEFAULT_CONFIG
    assert container_path(PROMETHEUS_CONFIG, prometheus) == PurePosixPath(config)


def test_observability_images_are_pinned_and_ports_local() -> None:
    for role in IMAGES:
        service = services()[service_named(role)]
        image = service["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert re.search(r"\d", tag), f"pin {image} to a version"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{role}: {port} is open beyond localhost"


def collector_config() -> dict[str, Any]:
    return dict(load_yaml(COLLECTOR_CONFIG))


def test_collector_pipelines_name_defined_components() -> None:
    config = collector_config()
    pipelines = config["service"]["pipelines"]
    assert "traces" in pipelines
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers"), name
        assert pipeline.get("exporters"), name
        for kind in ("receivers", "processors", "exporters"):
            undefined = set(pipeline.get(kind) or []) - set(config.get(kind) or {})
            assert not undefined, f"pipeline {name}: {kind} {sorted(undefined)} are not defined"
        processors = pipeline.get("processors") or []
        if "memory_limiter" in processors:
            assert processors[0] == "memory_limiter", f"{name}: memory_limiter goes first"
    extensions = set(config["service"].get("extensions") or [])
    assert extensions <= set(config.get("extensions") or {})


def test_collector_listens_for_otlp_on_every_interface() -> None:
    protocols = collector_config()["receivers"]["otlp"]["protocols"]
    assert host_port(protocols["grpc"]["endpoint"]) == ("0.0.0.0", 4317)
    assert host_port(protocols["http"]["endpoint"]) == ("0.0.0.0", 4318)


def test_collector_exports_traces_to_jaeger() -> None:
    config = collector_config()
    grpc = {
        name: exporter
        for name, exporter in config["exporters"].items()
        if name.split("/")[0] in ("otlp", "otlp_grpc")
    }
    assert grpc, "an OTLP/gRPC exporter sends spans on"
    for name, exporter in grpc.items():
        host, port = host_port(exporter["endpoint"].removeprefix("http://"))
        assert host == service_named("jaeger"), f"{name}: {host} is not the jaeger service"
        assert port == JAEGER_OTLP_GRPC_PORT, name
        assert exporter["tls"]["insecure"] is True, f"{name}: jaeger speaks plain gRPC"
        assert name in config["service"]["pipelines"]["traces"]["exporters"]
    assert "debug" in config["exporters"]


def test_prometheus_scrapes_exactly_the_stage_services() -> None:
    stages = stage_services()
    expected = {
        (name, int(service["environment"][f"{TELEMETRY}METRICS_PORT"]))
        for name, service in stages.items()
    }
    targets = {target for job in scrape_targets().values() for target in job}
    assert {t for t in targets if t[0] in stages} == expected
    unknown = {host for host, _ in targets} - set(services())
    assert not unknown, f"prometheus scrapes hosts compose does not run: {unknown}"


def test_prometheus_scrapes_the_collector_where_it_serves_its_metrics() -> None:
    readers = collector_config()["service"]["telemetry"]["metrics"]["readers"]
    ports = {reader["pull"]["exporter"]["prometheus"]["port"] for reader in readers}
    hosts = {reader["pull"]["exporter"]["prometheus"]["host"] for reader in readers}
    assert hosts == {"0.0.0.0"}, "the collector serves its metrics beyond its own container"
    targets = {target for job in scrape_targets().values() for target in job}
    assert {(service_named("collector"), port) for port in ports} <= targets


def test_grafana_knows_the_scrape_interval() -> None:
    interval = prometheus_config()["global"]["scrape_interval"]
    prometheus = next(
        source for source in load_yaml(DATASOURCES)["datasources"] if source["uid"] == "prometheus"
    )
    assert prometheus.get("jsonData", {}).get("timeInterval") == interval


@pytest.mark.parametrize("name", sorted(stage_services()))
def test_every_stage_sends_its_telemetry(name: str) -> None:
    service = stage_services()[name]
    environment = service.get("environment", {})
    values = {
        variable.removeprefix(TELEMETRY).lower(): value
        for variable, value in environment.items()
        if variable.startswith(TELEMETRY)
    }
    settings = TelemetrySettings(**values)  # the values are valid settings
    assert settings.traces == "local", "no collector runs without the observability profile"
    traces = load_yaml(COMPOSE)["x-telemetry-env"]["MARIONETTE_TELEMETRY_TRACES"]
    assert traces == "${MARIONETTE_TELEMETRY_TRACES:-local}", "the profile's users set both"
    assert settings.metrics_port > 0
    assert settings.metrics_host == "0.0.0.0", "prometheus scrapes from another container"

    endpoint = urlsplit(environment[OTLP_ENDPOINT])
    http = collector_config()["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert endpoint.scheme == "http"
    assert endpoint.hostname == service_named("collector")
    assert endpoint.port == host_port(http)[1], "OTLP/HTTP goes to the collector's http port"

    volumes = named_volumes(service)
    trace_dir = str(PurePosixPath(settings.trace_dir))
    assert volumes.get(trace_dir) == "traces", f"{name}: the traces volume holds {trace_dir}"
    assert "traces" in load_yaml(COMPOSE)["volumes"]
