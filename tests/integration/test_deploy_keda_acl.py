"""KEDA reads the stages' backlog as its own Redis user (deploy/kubernetes/keda/), through the
ACL of services/bus/acl.py, on a real server: what its redis-streams scaler sends works (INFO
for the server's version, XINFO GROUPS for the lag, XPENDING for the pending entries, after
HELLO 3 as go-redis connects), and nothing that writes or reconfigures does."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml

from contracts.topics import POLICY_TOKEN
from services.bus.acl import USERS, acl_file, new_passwords
from services.bus.partitions import partition_stream
from services.bus.redis_server import EmbeddedRedis

pytestmark = pytest.mark.timeout(60)

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "stages" / "config.yaml"


def keda_user() -> str:
    """The user the TriggerAuthentication names (through the marionette-redis ConfigMap)."""
    for document in yaml.safe_load_all(CONFIG.read_text()):
        if document["metadata"]["name"] == "marionette-redis":
            user: str = document["data"]["REDIS_KEDA_USER"]
            return user
    raise LookupError("no marionette-redis ConfigMap")


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, dict[str, str]]]:
    passwords = new_passwords()
    acl = tmp_path / "users.acl"
    acl.write_text(acl_file(passwords))
    with EmbeddedRedis(extra_args=["--aclfile", str(acl)]) as server:
        yield server, passwords


@pytest.mark.xfail(
    keda_user() not in USERS,
    reason="services/bus/acl.py has no user for KEDA yet (its lag needs INFO)",
    strict=True,
)
def test_keda_reads_lag_and_pending_entries_and_nothing_else(
    acl_server: tuple[EmbeddedRedis, dict[str, str]],
) -> None:
    server, passwords = acl_server
    user = keda_user()
    tts = redis.Redis(port=server.port, username="tts", password=passwords["tts"])
    stream = partition_stream(POLICY_TOKEN.name, 3)
    tts.xgroup_create(stream, "tts", id="0", mkstream=True)
    for n in range(5):
        tts.xadd(stream, {"n": str(n)})
    tts.xreadgroup("tts", "tts-replica", {stream: ">"}, count=2)  # 2 pending, 3 not yet read

    keda = redis.Redis(
        port=server.port, username=user, password=passwords[user], protocol=3,
        decode_responses=True,
    )  # fmt: skip
    assert int(str(keda.info()["redis_version"]).split(".")[0]) >= 7  # lagCount needs 7+
    (group,) = keda.xinfo_groups(stream)
    assert (group["name"], group["lag"], group["pending"]) == ("tts", 3, 2)
    assert keda.xpending(stream, "tts")["pending"] == 2
    assert keda.xlen(stream) == 5

    refused: list[Callable[[], object]] = [
        lambda: keda.xadd(stream, {"n": "x"}),
        lambda: keda.xack(stream, "tts", "0-1"),
        lambda: keda.xreadgroup("tts", "keda", {stream: ">"}),
        lambda: keda.delete(stream),
        lambda: keda.set("marionette:anything", "1"),
        lambda: keda.flushall(),
        lambda: keda.config_get("*"),
        lambda: keda.keys("*"),
    ]
    for command in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            command()
    assert tts.xlen(stream) == 5
