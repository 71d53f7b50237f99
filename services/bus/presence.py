"""Which replicas are alive: a heartbeat per replica in one Redis hash.

Every runtime writes `marionette:presence` field `<stage>/<replica>` every BEAT_S while it
runs (its host, pid, when it started, how many times that replica has started, and what
the stage says of itself: an integration's connection, from `Stage.status()`), and
removes it when it stops cleanly. A replica whose last beat is older than DEAD_AFTER_S
was killed. The gateway's /api/status reads it.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

log = logging.getLogger("marionette.bus")

PRESENCE_KEY = "marionette:presence"
STARTS_KEY = "marionette:presence:starts"
BEAT_S = 2.0
DEAD_AFTER_S = 3 * BEAT_S


@dataclass(frozen=True)
class ReplicaSeen:
    stage: str
    replica: str
    host: str
    pid: int
    started_at: float
    beat_at: float
    starts: int
    detail: dict[str, Any] | None = None

    def alive(self, now: float) -> bool:
        return now - self.beat_at < DEAD_AFTER_S


class Heartbeat:
    def __init__(
        self,
        client: Redis,
        stage: str,
        replica: str,
        detail: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        """detail: what the stage says of itself (JSON-able), read at every beat."""
        self.client = client
        self.detail = detail
        self.field = f"{stage}/{replica}"
        self.fixed = {"stage": stage, "replica": replica, "host": socket.gethostname(),
                      "pid": os.getpid(), "started_at": time.time()}  # fmt: skip
        self.starts = 0
        self._stopped = asyncio.Event()
        self._woken = asyncio.Event()

    async def run(self) -> None:
        """Beat until stop(); Redis being away only delays the next beat. (It watches a flag
        rather than relying on being cancelled: redis-py can lose a cancel that lands while
        it opens a connection, and a beat must never outlive its stage.)"""
        while not self._stopped.is_set():
            try:
                if not self.starts:
                    self.starts = int(await self.client.hincrby(STARTS_KEY, self.field, 1))
                body = {**self.fixed, "beat_at": time.time(), "starts": self.starts}
                if self.detail is not None and (said := self.detail()) is not None:
                    body["detail"] = said
                await self.client.hset(PRESENCE_KEY, self.field, json.dumps(body))
            except Exception as exc:  # best effort, like every beat
                log.debug("heartbeat of %s failed: %s", self.field, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), BEAT_S)
            self._woken.clear()

    def beat_now(self) -> None:
        """Beat at once (a stage whose detail changed: /api/status shows it within a beat)."""
        self._woken.set()

    def stop(self) -> None:
        self._stopped.set()
        self._woken.set()

    async def leave(self) -> None:
        try:
            await self.client.hdel(PRESENCE_KEY, self.field)
        except Exception as exc:
            log.debug("could not remove the heartbeat of %s: %s", self.field, exc)


async def replicas_seen(client: Redis) -> list[ReplicaSeen]:
    """Every replica that has beaten, alive or not, by stage and replica name."""
    raw = cast(dict[bytes, bytes], await client.hgetall(PRESENCE_KEY))
    seen = []
    for value in raw.values():
        try:
            data: dict[str, Any] = json.loads(value)
            seen.append(ReplicaSeen(**data))
        except (ValueError, TypeError):
            continue  # written by another version: not ours to show
    return sorted(seen, key=lambda r: (r.stage, r.replica))
