"""StageRuntime: runs a Stage against Redis with at-least-once delivery and fenced writes.

    asyncio.run(StageRuntime(Captions, load_bus_settings()).run())

It builds the stage (Stage.build) with a RedisBus (redis_bus.py), makes a FastStream
subscriber of each handler (typed parsing, telemetry), and reads the streams itself:
- ordered topics: the partitions this replica owns (ownership.py), one worker each
  (readers.py, delivery.py); a lost partition is dropped at once, a surplus one handed
  over after its entry in hand. The lease loop never waits for a handler.
- control (and any unordered topic): every replica reads every entry (control.py); every
  stage follows it for the module switches and panic (switches.py).
"""

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from faststream.redis import RedisBroker, RedisRouter
from redis.asyncio import Redis

from contracts.envelope import Envelope
from contracts.topics import ALL_TOPICS, CONTROL, Topic
from services.bus.connect import bus_client
from services.bus.control import ControlFollower
from services.bus.dead_letters import dead_letter_stream
from services.bus.delivery import ConsumerStats, EntryProcessor
from services.bus.faststream_bridge import (
    add_publisher,
    add_subscriber,
    make_broker,
    start_without_fetch_loops,
)
from services.bus.fencing import Fence, Fenced
from services.bus.interrupts import InterruptedTurns
from services.bus.ownership import LeaseChanges, PartitionOwnership, lease_key
from services.bus.partitions import streams_of
from services.bus.presence import Heartbeat
from services.bus.readers import PartitionedReader
from services.bus.recovery import REDIS_UNAVAILABLE, Backoff, raise_if_cancelling
from services.bus.redis_bus import BusNotRunning, RedisBus
from services.bus.settings import BusSettings
from services.bus.stage import Stage
from services.bus.switches import StageSwitch, read_switches_patiently, store_switch
from services.telemetry import metrics
from services.telemetry.health import BOARD as HEALTH
from services.telemetry.health import StageHealth

log = logging.getLogger("marionette.bus")

StageT = TypeVar("StageT", bound=Stage)
STOP_GRACE_S = 10.0  # what a stopping stage waits for its loops

__all__ = ["BusNotRunning", "RedisBus", "StageRuntime", "new_replica_id"]


def new_replica_id(stage_name: str) -> str:
    """Unique among live processes; the same for a container restarted in place (its host
    name and pid 1 stay), so it takes its partitions straight back."""
    return f"{stage_name}-{socket.gethostname()}-{os.getpid()}"


class StageRuntime(Generic[StageT]):
    """Runs a Stage against Redis until stopped.

    `await runtime.run(stop)` in a stage process; `async with runtime:` to run it in the
    background of a script or a test (`runtime.stage` is the stage it built)."""

    def __init__(
        self,
        stage_cls: type[StageT],
        settings: BusSettings,
        *,
        replica_id: str | None = None,
        build: Callable[[RedisBus], Awaitable[StageT]] | None = None,
        follow_switches: bool = True,
    ) -> None:
        """follow_switches=False: a tool publishing on someone's behalf (Producer), which
        module toggles and panic do not concern."""
        if not settings.redis_url:
            raise ValueError("StageRuntime needs settings.redis_url (see services.bus.server)")
        self.stage_cls = stage_cls
        self.settings = settings
        self.group = stage_cls.name
        self.replica_id = replica_id or settings.replica_id or new_replica_id(stage_cls.name)
        # A blocking XREADGROUP must not hit the socket timeout (redis-py's default is 5 s).
        self.client: Redis = bus_client(
            settings,
            health_check_interval=5,
            socket_timeout=settings.block_ms / 1000 + 10,
            socket_connect_timeout=5,
            # Taking over, every partition of every topic claims its pending entries at
            # once: the monitor reads all 15 topics, 120 commands on 8 partitions, over
            # redis-py's default of 100 (MaxConnectionsError, then retries).
            max_connections=len(ALL_TOPICS) * settings.partitions + 64,
        )
        self.interrupts = InterruptedTurns()
        self.switch = (
            StageSwitch(self.group, interrupt=self._interrupt,
                        store=functools.partial(store_switch, self.client))
            if follow_switches
            else None
        )  # fmt: skip
        # Stages beat (the gateway's /api/status lists them); tools publishing do not.
        self.heartbeat = (
            Heartbeat(self.client, self.group, self.replica_id) if follow_switches else None
        )
        self.consumers = stage_cls.consumers()
        self.ownership = (
            PartitionOwnership(
                self.client, group=self.group, replica_id=self.replica_id,
                partitions=settings.partitions, lease_ms=settings.lease_ms,
            )
            if any(c.topic.ordered for c in self.consumers)
            else None
        )  # fmt: skip
        self.router = RedisRouter()
        self.bus = RedisBus(
            group=self.group, replica_id=self.replica_id, settings=settings,
            client=self.client, interrupts=self.interrupts,
            fence=self.fence if self.ownership is not None else None, switch=self.switch,
        )  # fmt: skip
        for topic in stage_cls.published_topics():
            self.bus.add_publisher(topic, add_publisher(self.router, topic, self.group))
        self._build = build or stage_cls.build
        self._stage: StageT | None = None
        self.broker: RedisBroker | None = None
        self.processors: dict[str, EntryProcessor] = {}
        self._partitioned: list[PartitionedReader] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._draining: set[int] = set()
        self._followers: list[ControlFollower] = []
        self._ready = asyncio.Event()
        self._serving = False
        self._work: asyncio.Task[None] | None = None

    @property
    def stage(self) -> StageT:
        if self._stage is None:
            raise BusNotRunning(f"stage {self.group} has not been built yet")
        return self._stage

    # --- what /metrics reads (services.telemetry.metrics.WatchedRuntime) ----------------

    @property
    def redis_url(self) -> str:
        return self.settings.redis_url or ""

    @property
    def redis_cluster(self) -> bool:
        return self.settings.redis_cluster

    def consumer_counts(self) -> dict[str, ConsumerStats]:
        counts = {name: processor.stats for name, processor in self.processors.items()}
        counts |= {f.topic.name: f.stats for f in self._followers if f.subscriber is not None}
        return counts

    def consumed_streams(self) -> list[tuple[str, str]]:
        return [
            (c.topic.name, stream)
            for c in self.consumers
            if c.topic.ordered
            for stream in streams_of(c.topic, self.settings.partitions)
        ]

    def dead_letter_streams(self) -> dict[str, str]:
        return {c.topic.name: dead_letter_stream(c.topic.name) for c in self.consumers}

    def stats(self, topic_name: str) -> ConsumerStats:
        return self.consumer_counts()[topic_name]

    def fence(self, partition: int) -> Fence | None:
        ownership = self.ownership
        if ownership is None or ownership.fence(partition) is None:
            return None
        lease = ownership.leases[partition]

        def held() -> bool:
            return ownership.leases.get(partition) is lease and (
                time.monotonic() < lease.valid_until
            )

        return Fence(lease_key(self.group, partition), lease.token, held)

    # --- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Build the stage, then consume; returns once it holds its partitions (if free)
        and has read back the control history."""
        await self.prepare()
        await self.serve()

    async def prepare(self) -> None:
        """Everything that takes time before serving: build the stage (load its model),
        connect. A standby replica stops here until it is told to serve."""
        await self._redis_now()  # waits for Redis to answer
        stage = await self._build(self.bus)
        self._stage = stage
        if self.heartbeat is not None:  # a stage, not a tool publishing: /readyz counts it
            HEALTH.watch(self)
        if self.switch is not None:  # what outlived the control history
            self.switch.restore(await read_switches_patiently(self.client, self.group))
        for consumer in self.consumers:
            subscriber = add_subscriber(
                self.router, consumer.topic, self.group, getattr(stage, consumer.method)
            )
            if consumer.topic.ordered:
                switch = None if consumer.while_off else self.switch
                self._add_partitioned(
                    consumer.topic, subscriber, stage.drops_interrupted(consumer), switch
                )
            else:
                self._follow(consumer.topic, subscriber)
        follows_control = self.switch is not None or stage.interruptible
        if follows_control and CONTROL.name not in {c.topic.name for c in self.consumers}:
            self._follow(CONTROL, None)
        self.broker = make_broker(self.settings.redis_url or "", self.router, self.group)
        await start_without_fetch_loops(self.broker)
        self.bus.running = True

    async def serve(self) -> None:
        """Take the partitions and follow control; returns once it holds them (if free)
        and has read back the control history."""
        started_at = await self._redis_now()
        stage = self.stage
        caught_up = [asyncio.Event() for _ in self._followers]
        for follower, done in zip(self._followers, caught_up, strict=True):
            reading = follower.run(started_at, done)
            self._tasks.append(asyncio.create_task(reading, name=follower.reader.name))
        if self.ownership is not None:
            self._tasks.append(asyncio.create_task(self._own_partitions(), name="ownership"))
        for reader in self._partitioned:
            self._tasks.append(asyncio.create_task(reader.run(), name=reader.name))
        self._work = asyncio.create_task(self._background(stage), name="background")
        self._tasks.append(self._work)
        if self.heartbeat is not None:
            self.heartbeat.detail = stage.status
            self.bus.on_status_changed = self.heartbeat.beat_now
            self._tasks.append(asyncio.create_task(self.heartbeat.run(), name="heartbeat"))
        metrics.watch(self)
        waits = [event.wait() for event in caught_up]
        if self.ownership is not None:
            waits.append(self._ready.wait())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), self.settings.lease_ms / 1000)
        self._serving = True

    def health(self) -> StageHealth:
        """For /readyz (read from the metrics thread)."""
        return StageHealth(
            stage=self.group, replica=self.replica_id, redis_url=self.redis_url,
            redis_cluster=self.redis_cluster, built=self._stage is not None, serving=self._serving,
            leases_taken=self.ownership is None or self._ready.is_set(),
            partitions_held=sorted(self.ownership.leases) if self.ownership else [],
        )  # fmt: skip

    async def _redis_now(self) -> tuple[int, int]:
        """Redis's clock as an entry id; waits for Redis (it may be restarting)."""
        backoff = Backoff()
        while True:
            try:
                seconds, micros = await self.client.time()
                return seconds * 1000 + micros // 1000, 0
            except REDIS_UNAVAILABLE as exc:
                log.warning("%s: Redis does not answer yet (%s); waiting", self.group, exc)
                await backoff.wait()

    def _add_partitioned(
        self, topic: Topic[Any], subscriber: Any, drop: bool, switch: StageSwitch | None
    ) -> None:
        processor = EntryProcessor(
            client=self.client, topic=topic, group=self.group, consumer=self.replica_id,
            subscriber=subscriber, settings=self.settings,
            stale=self._stale if drop else None, forget=self.bus.forget_cached, switch=switch,
        )  # fmt: skip
        self.processors[topic.name] = processor
        self._partitioned.append(
            PartitionedReader(processor, topic.overflow, self.settings.partitions)
        )

    def _stale(self, message: Envelope) -> bool:
        return message.turn_id is not None and self.interrupts.covers(message)

    def _follow(self, topic: Topic[Any], subscriber: Any) -> None:
        interruptible = self.stage.interruptible
        self._followers.append(
            ControlFollower(
                client=self.client, topic=topic, subscriber=subscriber, group=self.group,
                replica_id=self.replica_id, settings=self.settings, interrupts=self.interrupts,
                on_interrupt=self._tell_interrupted if interruptible else None,
                switch=self.switch if topic.name == CONTROL.name else None,
            )
        )  # fmt: skip

    async def _interrupt(self, session_id: str, turn_id: str) -> None:
        """The path an Interrupt takes (control.py), for the turns a panic stops."""
        if self.interrupts.covers_turn(session_id, turn_id):
            return
        self.interrupts.add(session_id, turn_id)
        if self.stage.interruptible:
            await self._tell_interrupted(session_id, turn_id)

    async def _tell_interrupted(self, session_id: str, turn_id: str) -> None:
        try:
            await self.stage.on_interrupt(session_id, turn_id)
        except Fenced:
            pass  # another replica owns that session: it closes the turn
        except Exception:
            log.exception("%s: on_interrupt(%s, %s) failed", self.group, session_id, turn_id)

    async def _background(self, stage: Stage) -> None:
        if not self.consumers:
            await stage.background()  # a producer (capture): its end is the stage's
            return
        try:
            await stage.background()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: background work failed", self.group)

    # --- partitions -------------------------------------------------------------------------

    async def _own_partitions(self) -> None:
        ownership = self.ownership
        assert ownership is not None
        interval_s = self.settings.lease_ms / 4000
        backoff = Backoff(cap_s=interval_s / 2)
        failing = False
        while True:
            raise_if_cancelling()
            try:
                changes = await ownership.tick()
                if failing:
                    log.warning("%s: leases: Redis is back", self.group)
                failing = False
                backoff.reset()
            except Exception as exc:
                raise_if_cancelling()
                if not failing:
                    log.warning("%s: leases: %s: %s; retrying", self.group,
                                type(exc).__name__, exc)  # fmt: skip
                failing = True
                ownership.redis_away()
                changes = LeaseChanges(lost=ownership.drop_expired())
            self._apply(changes)
            self._ready.set()
            if failing:
                await backoff.wait()
            else:
                await asyncio.sleep(interval_s)

    def _apply(self, changes: LeaseChanges) -> None:
        """Never waits: a handler in progress must not delay the next renewal."""
        for number in sorted(changes.lost):
            log.warning("%s: lost partition %d", self.group, number)
            self._draining.discard(number)
            for reader in self._partitioned:
                reader.stop(number)
            self.bus.forget_partition(number)
        for number in sorted(changes.surplus - self._draining):
            self._draining.add(number)
            self._tasks.append(asyncio.create_task(self._hand_over(number)))
        for number in sorted(changes.gained):
            fence = self.fence(number)
            if fence is None:
                continue
            for reader in self._partitioned:
                reader.start(number, fence)
        if changes and self.ownership is not None:
            log.info("%s: %s holds partitions %s", self.group, self.replica_id,
                     sorted(self.ownership.leases))  # fmt: skip

    async def _hand_over(self, number: int) -> None:
        """Give a surplus partition to another replica: finish the entry in hand first."""
        workers = [w for reader in self._partitioned if (w := reader.drain(number)) is not None]
        await asyncio.gather(*workers, return_exceptions=True)
        for reader in self._partitioned:
            reader.stop(number)
        self.bus.forget_partition(number)
        if number in self._draining and self.ownership is not None:
            self._draining.discard(number)
            with contextlib.suppress(Exception):
                await self.ownership.release(number)

    async def stop(self) -> None:
        """Stop reading, hand the partitions back, disconnect."""
        metrics.unwatch(self)
        HEALTH.unwatch(self)
        self._serving = False
        if self.heartbeat is not None:
            self.heartbeat.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_GRACE_S)
            for task in stuck:
                log.warning("%s: %s did not stop within %.0f s", self.group,
                            task.get_name(), STOP_GRACE_S)  # fmt: skip
        self._tasks = []
        workers = [
            w for reader in self._partitioned for number in list(reader.parts)
            if (w := reader.stop(number)) is not None
        ]  # fmt: skip
        if workers:
            await asyncio.wait(workers, timeout=STOP_GRACE_S)
        if self.ownership is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ownership.release_all(), 2.0)
        self.bus.running = False
        if self.heartbeat is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.heartbeat.leave(), 1.0)
        if self.broker is not None:
            await self.broker.stop()
        await self.client.aclose()

    async def run(
        self,
        stop: asyncio.Event | None = None,
        ready: Callable[[], None] = lambda: None,
        *,
        standby: asyncio.Event | None = None,
        prepared: Callable[[], None] = lambda: None,
    ) -> None:
        """Run until `stop` is set (or for ever); a stage that consumes nothing (capture)
        until its background work is done. ready() is called once it is serving.

        standby: prepare (load the model), call prepared(), and serve only once this event
        is set: a spare that takes over at once from a replica that died."""
        stop = stop or asyncio.Event()
        stopped = asyncio.create_task(stop.wait())
        try:
            await self.prepare()
            if standby is not None:
                prepared()
                log.info("stage %s ready to take over as %s", self.group, self.replica_id)
                activated = asyncio.create_task(standby.wait())
                await asyncio.wait({stopped, activated}, return_when=asyncio.FIRST_COMPLETED)
                activated.cancel()
                if stop.is_set():
                    return
            await self.serve()
            ready()  # first: whoever reads the line below may take the stage as serving
            log.info("stage %s running as %s", self.group, self.replica_id)
            waits: set[asyncio.Future[Any]] = {stopped}
            if not self.consumers and self._work is not None:
                waits.add(self._work)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if self._work is not None and self._work.done() and not self._work.cancelled():
                self._work.result()  # a producer's failure is the stage's
        finally:
            stopped.cancel()
            await self.stop()

    async def __aenter__(self) -> "StageRuntime[StageT]":
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
