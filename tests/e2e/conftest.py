"""The end-to-end tests share one run of the sample through `marionette up` (minutes),
recorded by `marionette record`."""

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis

from services.bus import load_bus_settings
from tests.e2e.sample_run import (
    SampleRun,
    run_to_the_end,
    start_recorder,
    start_sample_run,
    stop_recorder,
)


@pytest.fixture(scope="package")
def sample_run(
    redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SampleRun]:
    with redis.Redis.from_url(redis_server_url) as client:
        client.flushall()
    folder = tmp_path_factory.mktemp("sample-run")
    recorder = start_recorder(load_bus_settings(redis_url=redis_server_url), folder)
    pipeline = start_sample_run(redis_server_url, folder)
    try:
        run = asyncio.run(run_to_the_end(pipeline, folder / "traces"))
        yield replace(run, recording=folder / "run.mrec", recorder_exit=stop_recorder(recorder))
    finally:
        pipeline.kill()  # a no-op once it has stopped cleanly
        recorder.kill()
