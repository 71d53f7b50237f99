"""The end-to-end tests share one run of the sample through `marionette up` (minutes)."""

import asyncio
from collections.abc import Iterator

import pytest
import redis

from tests.e2e.sample_run import SampleRun, run_to_the_end, start_sample_run


@pytest.fixture(scope="package")
def sample_run(
    redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SampleRun]:
    with redis.Redis.from_url(redis_server_url) as client:
        client.flushall()
    folder = tmp_path_factory.mktemp("sample-run")
    pipeline = start_sample_run(redis_server_url, folder)
    try:
        yield asyncio.run(run_to_the_end(pipeline, folder / "traces"))
    finally:
        pipeline.kill()  # a no-op once it has stopped cleanly
