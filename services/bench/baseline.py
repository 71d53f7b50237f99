"""The baseline a bus hop is compared with: raw redis-py XADD -> XREADGROUP, same Redis."""

import asyncio
import time
import uuid
from typing import Any, cast

from redis.asyncio import Redis

from services.bus.wire import entry_time


async def raw_hops(url: str, count: int = 200, interval_s: float = 0.005) -> list[float]:
    """Seconds from XADD (its entry id's time) to a blocked XREADGROUP returning it."""
    stream, group = f"bench.raw.{uuid.uuid4().hex[:8]}", "bench"
    writer: Redis = Redis.from_url(url)
    reader: Redis = Redis.from_url(url)
    hops: list[float] = []
    try:
        await writer.xgroup_create(stream, group, id="$", mkstream=True)

        async def read() -> None:
            while len(hops) < count:
                reply = await reader.xreadgroup(group, "r", {stream: ">"}, count=10, block=1000)
                now = time.time()
                for _, entries in cast(list[tuple[bytes, list[tuple[bytes, Any]]]], reply or []):
                    hops.extend(now - entry_time(entry_id) for entry_id, _ in entries)

        reading = asyncio.create_task(read())
        await asyncio.sleep(0.05)
        for n in range(count):
            await writer.xadd(stream, {"n": n})
            await asyncio.sleep(interval_s)
        await asyncio.wait_for(reading, timeout=10)
    finally:
        await writer.delete(stream)
        await writer.aclose()
        await reader.aclose()
    return hops
