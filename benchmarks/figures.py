"""Small helpers the benchmarks share."""

import asyncio
import math
from asyncio.subprocess import Process
from typing import Any


def nan_to_none(value: Any) -> Any:
    """NaN is not JSON: a figure that could not be taken is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value


async def stop_child(child: Process, grace_s: float = 10.0) -> None:
    """SIGTERM a child process; SIGKILL it if it has not ended after grace_s."""
    if child.returncode is None:
        child.terminate()
        try:
            await asyncio.wait_for(child.wait(), grace_s)
        except TimeoutError:
            child.kill()
            await child.wait()
