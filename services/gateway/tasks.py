"""Stopping the gateway's per-connection tasks for good."""

import asyncio
from collections.abc import Iterable
from typing import Any

STOP_AGAIN_S = 0.2
"""How often stop_tasks cancels again what has not ended."""


async def stop_tasks(tasks: Iterable["asyncio.Task[Any]"]) -> None:
    """Cancel the tasks and wait until they have ended, cancelling again while they run: on
    Python 3.11 a cancel that lands while redis-py opens a connection (its asyncio.wait_for)
    is lost, and a stream follower would read on forever. If the caller is cancelled
    meanwhile, that waits until they have ended too."""
    pending = {task for task in tasks if not task.done()}
    cancelled = False
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=STOP_AGAIN_S)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
