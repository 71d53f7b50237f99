"""What the deployment tests (test_deploy_kubernetes.py, test_deploy_nomad.py) share.

deploy/kubernetes/ put together as `kubectl kustomize` does, without kustomize (it is not on
every machine), for the few features these kustomizations use, refusing any other so that
nothing is skipped unseen; where kubectl is installed the tests compare it with kubectl's.
And what the code says runs where: the stages compose runs, the settings that exist."""

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from services.settings_reference import PROCESS_VARIABLES, _classes

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
ENTRY_POINTS = (KUBERNETES, KUBERNETES / "external-redis")
"""What one applies: `kubectl apply -k` on either."""

Object = dict[str, Any]

WORK_TOPICS = {
    "asr": {"audio.frame"},
    "policy": {"asr.final", "chat.message"},
    "tts": {"policy.token"},
    "avatar": {"tts.chunk"},
    "playback": {"tts.chunk"},
}
"""The topics whose backlog is work for each stage; the others it consumes (control,
playback progress, its echo's far end...) say nothing about its load."""

KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "resources", "components", "patches"}


def documents(path: Path) -> list[Object]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization(directory: Path) -> Object:
    (document,) = documents(directory / "kustomization.yaml")
    unknown = set(document) - KNOWN_FIELDS
    if unknown:
        raise NotImplementedError(
            f"{directory}: kustomize fields the tests cannot build: {unknown}"
        )
    return document


def listed(directory: Path) -> list[Path]:
    """The files and folders a kustomization names (resources, components, patches)."""
    spec = kustomization(directory)
    names = [*spec.get("resources", []), *spec.get("components", [])]
    names += [patch["path"] for patch in spec.get("patches", [])]
    return [(directory / name).resolve() for name in names]


def build(directory: Path) -> list[Object]:
    spec = kustomization(directory)
    if spec["kind"] not in ("Kustomization", "Component"):
        raise ValueError(f"{directory}: kind {spec['kind']}")
    objects: list[Object] = []
    for name in [*spec.get("resources", []), *spec.get("components", [])]:
        path = directory / name
        if path.is_dir():
            objects += build(path)
        elif path.is_file():
            objects += [copy.deepcopy(d) for d in documents(path)]
        else:
            raise FileNotFoundError(f"{directory / 'kustomization.yaml'} lists {name}: not there")
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise NotImplementedError(f"{directory}: only patches by path: {patch}")
        for document in documents(directory / patch["path"]):
            _merge_config_map(objects, document)
    if "namespace" in spec:
        for obj in objects:
            obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def _merge_config_map(objects: list[Object], patch: Object) -> None:
    if patch["kind"] != "ConfigMap" or set(patch) - {"apiVersion", "kind", "metadata", "data"}:
        raise NotImplementedError(f"the tests merge only a ConfigMap's data: {patch}")
    name = patch["metadata"]["name"]
    targets = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    if len(targets) != 1:
        raise LookupError(f"a patch of ConfigMap {name} matches {len(targets)} objects")
    targets[0]["data"].update(patch["data"])


def kubectl_kustomize(directory: Path) -> list[Object] | None:
    """kubectl's own build (kustomize is in kubectl), or None without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory}: {done.stderr}")
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def named(objects: list[Object], kind: str, name: str) -> Object:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def of_kind(objects: list[Object], kind: str) -> list[Object]:
    return [o for o in objects if o["kind"] == kind]


def known_variables() -> set[str]:
    names = {name for name, _, _ in PROCESS_VARIABLES}
    for _, cls in _classes():
        prefix = str(cls.model_config.get("env_prefix", "MARIONETTE_"))
        names |= {f"{prefix}{field.upper()}" for field in cls.model_fields}
    return names


def compose_stages() -> set[str]:
    """The stages deploy/docker-compose.yml runs: the source of truth for what runs in a
    container (capture runs where the microphone is)."""
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    return {
        service["command"][1]
        for service in compose["services"].values()
        if service.get("command", [None])[0] == "run" and "profiles" not in service
    }
