"""How fast a replay goes: the recorded pace times a speed factor, or as fast as the
consumers take it (a bounded backlog per stream, measured on the live consumer groups)."""

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from contracts.topics import Topic
from services.bus.partitions import streams_of

log = logging.getLogger("marionette.replay")

BACKLOG_WINDOW = 128
"""In fast mode, about this many entries of a stream wait for its slowest live group: well
under a stage's in-process queue (MARIONETTE_QUEUE_SIZE), which drops old audio frames
when full."""
CHECK_EVERY = 32
LIVE_CONSUMER_IDLE_MS = 10_000
"""A consumer that asked for entries this recently is running; older groups are left over."""


class ReplayStalled(RuntimeError):
    """Consumers stopped taking entries while a fast replay waited on them."""


class Pacer:
    """Spaces records as they were recorded, divided by `speed`; None: no spacing."""

    def __init__(self, speed: float | None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be above 0, not {speed}")
        self.speed = speed
        self._origin: tuple[float, float] | None = None  # (recorded time, monotonic time)

    async def wait(self, recorded_at: float) -> None:
        if self.speed is None:
            return
        now = time.monotonic()
        if self._origin is None:
            self._origin = (recorded_at, now)
            return
        due = self._origin[1] + (recorded_at - self._origin[0]) / self.speed
        if due > now:
            await asyncio.sleep(due - now)


def _any_live(consumers: list[dict[str, Any]]) -> bool:
    return any(int(c.get("idle", 1 << 62)) < LIVE_CONSUMER_IDLE_MS for c in consumers)


async def group_live(client: Redis, topic: Topic[Any], group: str, partitions: int) -> bool:
    """Whether a stage's consumer group reads every stream of the topic (a tool that starts
    stages waits for this before it sends anything)."""
    for stream in streams_of(topic, partitions):
        try:
            consumers = await client.xinfo_consumers(stream, group)
        except RedisError:
            return False  # no stream or group yet (or Redis not answering yet)
        if not _any_live(consumers):
            return False
    return True


async def live_backlog(client: Redis, stream: str) -> tuple[int, str | None]:
    """The largest backlog (undelivered + unacknowledged) of the stream's live groups."""
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:
        return 0, None  # no such stream yet
    worst, worst_group = 0, None
    for group in groups:
        name = group["name"].decode() if isinstance(group["name"], bytes) else str(group["name"])
        if not _any_live(await client.xinfo_consumers(stream, name)):
            continue
        backlog = int(group.get("lag") or 0) + int(group.get("pending") or 0)
        if backlog > worst:
            worst, worst_group = backlog, name
    return worst, worst_group


class ConsumerWindow:
    """Holds a fast replay back while a stream's slowest live consumer group is behind."""

    def __init__(self, client: Redis, queue_size: int = 256, stall_s: float = 30.0) -> None:
        self.client = client
        self.window = max(1, min(BACKLOG_WINDOW, queue_size // 2 - CHECK_EVERY))
        self.stall_s = stall_s
        self._since_check: Counter[str] = Counter()

    async def wait(self, stream: str) -> None:
        self._since_check[stream] += 1
        if self._since_check[stream] < CHECK_EVERY:
            return
        self._since_check[stream] = 0
        last_backlog, last_change = -1, time.monotonic()
        while True:
            backlog, group = await live_backlog(self.client, stream)
            if backlog <= self.window:
                return
            if backlog != last_backlog:
                last_backlog, last_change = backlog, time.monotonic()
            elif time.monotonic() - last_change > self.stall_s:
                raise ReplayStalled(
                    f"group {group} took nothing from {stream} for {self.stall_s:.0f} s "
                    f"({backlog} entries waiting): is that stage running? "
                    "--speed replays without waiting on consumers"
                )
            await asyncio.sleep(0.01)
