"""StageRuntime: runs a Stage against Redis with at-least-once delivery and fenced writes.

    asyncio.run(StageRuntime(Captions, load_bus_settings()).run())

It builds the stage (Stage.build) with a RedisBus, makes a FastStream subscriber of each
handler (typed parsing, telemetry), and reads the streams itself:
- ordered topics: the partitions this replica owns (services.bus.ownership), one worker
  each; a lost partition is dropped at once, a surplus one handed over after its entry in
  hand;
- control (and any unordered topic): every replica reads every entry; the runtime notes
  interrupts before the stage's own control handler runs, and drops the late messages of
  interrupted turns for interruptible stages.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from faststream.redis import RedisBroker, RedisRouter
from faststream.redis.message import DefaultStreamMessage
from pydantic import BaseModel
from redis.asyncio import Redis

from contracts import Control, Interrupt
from contracts.envelope import Envelope
from contracts.topics import ALL_TOPICS, Topic
from services.bus.causes import cause_headers
from services.bus.dead_letters import DLQ_MAXLEN, dead_letter_fields, dead_letter_stream
from services.bus.delivery import (
    ConsumerStats,
    Delivery,
    EntryProcessor,
    current_delivery,
    write_while_owned,
)
from services.bus.faststream_bridge import (
    FencedPublish,
    add_publisher,
    add_subscriber,
    fenced_publish,
    make_broker,
    start_without_fetch_loops,
)
from services.bus.fencing import Fence, Fenced, Writes
from services.bus.interrupts import InterruptedTurns
from services.bus.ownership import LeaseChanges, PartitionOwnership, lease_key
from services.bus.partitions import partition_of, stream_for, streams_of
from services.bus.readers import BroadcastReader, PartitionedReader
from services.bus.recovery import REDIS_UNAVAILABLE, Backoff, raise_if_cancelling
from services.bus.settings import BusSettings
from services.bus.stage import KeyValue, Publishes, SessionMemory, Stage
from services.bus.state import RedisState
from services.bus.wire import MalformedMessage, StreamEntry, decode_entry, entry_order
from services.telemetry import metrics

log = logging.getLogger("marionette.bus")

M = TypeVar("M", bound=Envelope)
S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")
StageT = TypeVar("StageT", bound=Stage)
RECENT_CONTROL = 4096  # control message ids remembered, to drop a re-published one
STOP_GRACE_S = 10.0  # what a stopping stage waits for its loops


class BusNotRunning(RuntimeError):
    """A publisher was used outside a running StageRuntime."""


def new_replica_id(stage_name: str) -> str:
    """Unique among live processes; the same for a container restarted in place (its host
    name and pid 1 stay), so it takes its partitions straight back."""
    return f"{stage_name}-{socket.gethostname()}-{os.getpid()}"


class RedisPublisher:
    """Publishes one topic's messages to their (partition) stream, fenced when it must be."""

    def __init__(self, bus: "RedisBus", topic: Topic[Any], faststream_publisher: Any) -> None:
        self.bus = bus
        self.topic = topic
        self._publisher = faststream_publisher

    async def publish(self, message: Envelope) -> bytes | None:
        if not isinstance(message, self.topic.model):
            raise TypeError(
                f"{self.topic.name} carries {self.topic.model.__name__}, "
                f"not {type(message).__name__}"
            )
        if not self.bus.running:
            raise BusNotRunning(f"publish to {self.topic.name} outside a running StageRuntime")
        settings = self.bus.settings
        stream = stream_for(self.topic, message.session_id, settings.partitions)
        maxlen = settings.maxlen_for(self.topic.name, self.topic.maxlen)
        delivery = current_delivery.get()
        if delivery is not None and delivery.closed:
            delivery = None  # a task its handler started, still running after it
        fence = self.bus.fence_for(message.session_id, delivery)
        if fence is None:
            return await self._publish_through_outages(message, stream, maxlen)
        writes = delivery.take_pending(progress=True) if delivery is not None else Writes()
        plan = FencedPublish(fence, writes, self.bus.write)
        token = fenced_publish.set(plan)
        try:
            entry_id: bytes = await self._publisher.publish(
                message, stream=stream, maxlen=maxlen, headers=cause_headers()
            )
            return entry_id
        finally:
            fenced_publish.reset(token)

    async def _publish_through_outages(
        self, message: Envelope, stream: str, maxlen: int, timeout_s: float = 30.0
    ) -> bytes:
        """An unfenced publish (a stage that owns no partitions: capture, tools), retried
        while Redis is away; a retried publish may land twice, which consumers drop."""
        backoff = Backoff()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                entry_id: bytes = await self._publisher.publish(
                    message, stream=stream, maxlen=maxlen, headers=cause_headers()
                )
                return entry_id
            except REDIS_UNAVAILABLE:
                raise_if_cancelling()
                if time.monotonic() > deadline:
                    raise
                await backoff.wait()


class RedisBus:
    """The Bus a stage gets under StageRuntime (services.bus.stage.Bus)."""

    def __init__(self, runtime: "StageRuntime[Any]") -> None:
        self._runtime = runtime
        self.settings = runtime.settings
        self.replica_id = runtime.replica_id
        self.store: KeyValue = cast(KeyValue, runtime.client)
        self.running = False
        self._publishers: dict[str, RedisPublisher] = {}
        self._states: dict[str, RedisState[Any]] = {}
        self._memories: list[SessionMemory[Any]] = []

    def add_publisher(self, topic: Topic[Any], faststream_publisher: Any) -> None:
        self._publishers[topic.name] = RedisPublisher(self, topic, faststream_publisher)

    def publisher(self, topic: Topic[M]) -> RedisPublisher:
        try:
            return self._publishers[topic.name]
        except KeyError:
            raise TypeError(
                f"stage {self._runtime.stage_cls.name} publishes {topic.name} without "
                f"declaring it: add `name = Publishes({topic.name.upper().replace('.', '_')})` "
                "to its class"
            ) from None

    def state(self, name: str, model: type[S]) -> RedisState[S]:
        if name not in self._states:
            self._states[name] = RedisState(
                self._runtime.client, group=self._runtime.group, name=name, model=model,
                partitions=self.settings.partitions,
            )  # fmt: skip
        return self._states[name]

    def memory(self, make: Callable[[str], T]) -> SessionMemory[T]:
        memory = SessionMemory(make)
        self._memories.append(memory)
        return memory

    def interrupted(self, session_id: str, turn_id: str | None) -> bool:
        return turn_id is not None and self._runtime.interrupts.covers_turn(session_id, turn_id)

    def hold(self) -> None:
        _delivery("hold").held = True

    def release(self, session_id: str, *, keep_last: int = 0) -> None:
        _delivery("release").release(session_id, keep_last)

    async def checkpoint(self) -> None:
        delivery = _delivery("checkpoint")
        writes = delivery.take_pending(progress=True)
        if writes:
            await self.write(delivery.fence, writes)

    # --- for the runtime ----------------------------------------------------------------

    async def write(self, fence: Fence, writes: Writes) -> Any:
        return await write_while_owned(self._runtime.client, fence, writes)

    def fence_for(self, session_id: str, delivery: Delivery | None) -> Fence | None:
        """None: this stage owns no partitions, so it writes unfenced (capture, tools)."""
        ownership = self._runtime.ownership
        if ownership is None:
            return None
        partition = partition_of(session_id, self.settings.partitions)
        if delivery is not None and delivery.fence.lease_key == lease_key(
            self._runtime.group, partition
        ):
            return delivery.fence
        fence = self._runtime.fence(partition)
        if fence is None:
            raise Fenced(
                f"{self.replica_id} does not own the partition of session {session_id}: "
                "only its owner publishes for it"
            )
        return fence

    def forget_partition(self, partition: int) -> None:
        partitions = self.settings.partitions
        for state in self._states.values():
            state.drop_partition(partition)
        for memory in self._memories:
            memory.drop(lambda session: partition_of(session, partitions) == partition)

    def forget_cached(self, keys: set[str]) -> None:
        for state in self._states.values():
            state.drop_cached(keys)


def _delivery(what: str) -> Delivery:
    delivery = current_delivery.get()
    if delivery is None or delivery.closed:
        raise RuntimeError(f"{what}() is for the handler of an ordered topic, while it runs")
    return delivery


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
    ) -> None:
        if not settings.redis_url:
            raise ValueError("StageRuntime needs settings.redis_url (see services.bus.server)")
        self.stage_cls = stage_cls
        self.settings = settings
        self.group = stage_cls.name
        self.replica_id = replica_id or settings.replica_id or new_replica_id(stage_cls.name)
        # A blocking XREADGROUP must not hit the socket timeout (redis-py's default is 5 s).
        self.client: Redis = Redis.from_url(
            settings.redis_url,
            health_check_interval=5,
            socket_timeout=settings.block_ms / 1000 + 10,
            socket_connect_timeout=5,
        )
        self.interrupts = InterruptedTurns()
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
        self.bus = RedisBus(self)
        for topic in stage_cls.published_topics():
            self.bus.add_publisher(topic, add_publisher(self.router, topic, self.group))
        self._build = build or stage_cls.build
        self._stage: StageT | None = None
        self.broker: RedisBroker | None = None
        self.processors: dict[str, EntryProcessor] = {}
        self._partitioned: list[PartitionedReader] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._draining: set[int] = set()
        self._recent_control: OrderedDict[str, None] = OrderedDict()
        self._cursors: dict[str, tuple[int, int]] = {}
        self._broadcast: list[tuple[BroadcastReader, str]] = []
        self._started_at = (0, 0)  # Redis time when start() began, as an entry id
        self._ready = asyncio.Event()
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

    def consumer_counts(self) -> dict[str, ConsumerStats]:
        return {name: processor.stats for name, processor in self.processors.items()}

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
        return self.processors[topic_name].stats

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
        self._started_at = await self._redis_now()
        stage = await self._build(self.bus)
        self._stage = stage
        for consumer in self.consumers:
            subscriber = add_subscriber(
                self.router, consumer.topic, self.group, getattr(stage, consumer.method)
            )
            if consumer.topic.ordered:
                self._add_partitioned(consumer.topic, subscriber, stage.drops_interrupted(consumer))
            else:
                self._add_broadcast(consumer.topic, subscriber)
        if stage.interruptible and not any(c.topic.name == "control" for c in self.consumers):
            self._add_broadcast(_control_topic(), None)
        self.broker = make_broker(self.settings.redis_url or "", self.router, self.group)
        await start_without_fetch_loops(self.broker)
        self.bus.running = True
        caught_up = [asyncio.Event() for _ in self._broadcast]
        for (broadcast, cursor_key), done in zip(self._broadcast, caught_up, strict=True):
            reading = self._read_broadcast(broadcast, cursor_key, done)
            self._tasks.append(asyncio.create_task(reading, name=broadcast.name))
        if self.ownership is not None:
            self._tasks.append(asyncio.create_task(self._own_partitions(), name="ownership"))
        for reader in self._partitioned:
            self._tasks.append(asyncio.create_task(reader.run(), name=reader.name))
        self._work = asyncio.create_task(self._background(stage), name="background")
        self._tasks.append(self._work)
        metrics.watch(self)
        waits = [event.wait() for event in caught_up]
        if self.ownership is not None:
            waits.append(self._ready.wait())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), self.settings.lease_ms / 1000)

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

    def _add_partitioned(self, topic: Topic[Any], subscriber: Any, drop: bool) -> None:
        processor = EntryProcessor(
            client=self.client, topic=topic, group=self.group, consumer=self.replica_id,
            subscriber=subscriber, settings=self.settings,
            stale=self._stale if drop else None, forget=self.bus.forget_cached,
        )  # fmt: skip
        self.processors[topic.name] = processor
        self._partitioned.append(
            PartitionedReader(processor, topic.overflow, self.settings.partitions)
        )

    def _stale(self, message: Envelope) -> bool:
        return message.turn_id is not None and self.interrupts.covers(message)

    def _add_broadcast(self, topic: Topic[Any], subscriber: Any) -> None:
        stats = ConsumerStats()
        if subscriber is not None:
            self.processors[topic.name] = _StatsOnly(stats)  # type: ignore[assignment]
        cursor_key = f"marionette:cursor:{self.group}:{topic.name}"

        async def handle(entry: StreamEntry, replayed: bool) -> None:
            await self._on_broadcast(topic, subscriber, stats, cursor_key, entry, replayed)

        reader = BroadcastReader(
            self.client, topic.name, handle,
            history_ms=self.settings.control_history_s * 1000, block_ms=self.settings.block_ms,
            read_count=self.settings.read_count, name=f"{self.group}/{topic.name}",
        )  # fmt: skip
        self._broadcast.append((reader, cursor_key))

    async def _read_broadcast(
        self, reader: BroadcastReader, cursor_key: str, caught_up: asyncio.Event
    ) -> None:
        raw = await _quiet(self.client.get(cursor_key))
        self._cursors[cursor_key] = entry_order(raw) if raw else (0, 0)
        await reader.run(caught_up)

    def _fresh(self, entry: StreamEntry, replayed: bool, cursor_key: str) -> bool:
        """Not read back from before this replica started, nor handled by this stage then.

        A control message in the history that is newer than the stage's cursor came while
        every replica was down; one newer than this replica's start came while it was
        starting: both are handled in full."""
        order = entry_order(entry.entry_id)
        return (
            not replayed
            or order >= self._started_at
            or (order > self._cursors.get(cursor_key, (0, 0)))
        )

    async def _on_broadcast(
        self,
        topic: Topic[Any],
        subscriber: Any,
        stats: ConsumerStats,
        cursor_key: str,
        entry: StreamEntry,
        replayed: bool,
    ) -> None:
        try:
            message = decode_entry(entry, topic, self.settings.max_message_bytes).envelope
        except MalformedMessage as exc:
            if not replayed:
                await self._dead_letter(topic, entry, str(exc), 1)
                stats.count("dead_letter")
            return
        if message.message_id in self._recent_control:
            stats.count("duplicate")
            return
        self._recent_control[message.message_id] = None
        while len(self._recent_control) > RECENT_CONTROL:
            self._recent_control.popitem(last=False)
        fresh = self._fresh(entry, replayed, cursor_key)
        if isinstance(message, Control) and isinstance(message.command, Interrupt):
            turn = message.command.target_turn_id
            if not self.interrupts.covers_turn(message.session_id, turn):
                self.interrupts.add(message.session_id, turn)
                if fresh and self._stage is not None and self._stage.interruptible:
                    await self._tell_interrupted(message.session_id, turn)
        if subscriber is None or not fresh:
            return  # an old one only tells which turns were interrupted
        for attempt in range(1, self.settings.max_deliveries + 1):
            try:
                await subscriber.process_message(
                    DefaultStreamMessage(
                        type="stream", channel=entry.stream,
                        message_ids=[entry.entry_id], data=entry.fields,
                    )
                )  # fmt: skip
                stats.count("handled")
                break
            except Fenced as exc:
                log.debug("%s: %s", self.group, exc)  # not this replica's session
                break
            except Exception as exc:
                if attempt == self.settings.max_deliveries:
                    limit = self.settings.max_deliveries
                    reason = f"handler failed on attempt {attempt} of {limit}: {_why(exc)}"
                    await self._dead_letter(topic, entry, reason, attempt)
                    stats.count("dead_letter")
                    break
                stats.retries += 1
                await asyncio.sleep(self.settings.retry_backoff_ms / 1000 * 2 ** (attempt - 1))
        self._cursors[cursor_key] = entry_order(entry.entry_id)
        await _quiet(self.client.set(cursor_key, entry.entry_id, ex=self.settings.dedup_ttl_s))

    async def _tell_interrupted(self, session_id: str, turn_id: str) -> None:
        try:
            await self.stage.on_interrupt(session_id, turn_id)
        except Fenced:
            pass  # another replica owns that session: it closes the turn
        except Exception:
            log.exception("%s: on_interrupt(%s, %s) failed", self.group, session_id, turn_id)

    async def _dead_letter(
        self, topic: Topic[Any], entry: StreamEntry, reason: str, deliveries: int
    ) -> None:
        log.error("%s: %s entry %s -> dead letters: %s",
                  self.group, entry.stream, entry.entry_id.decode(), reason)  # fmt: skip
        fields = dead_letter_fields(
            entry, topic_name=topic.name, reason=reason, delivery_count=deliveries,
            group=self.group, consumer=self.replica_id,
        )  # fmt: skip
        await _quiet(self.client.xadd(dead_letter_stream(topic.name), fields, maxlen=DLQ_MAXLEN))  # type: ignore[arg-type]

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
        if self.broker is not None:
            await self.broker.stop()
        await self.client.aclose()

    async def run(
        self, stop: asyncio.Event | None = None, ready: Callable[[], None] = lambda: None
    ) -> None:
        """Run until `stop` is set (or for ever); a stage that consumes nothing (capture)
        until its background work is done. ready() is called once it is serving."""
        await self.start()
        log.info("stage %s running as %s", self.group, self.replica_id)
        ready()
        stopped = asyncio.create_task((stop or asyncio.Event()).wait())
        try:
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


class _StatsOnly:
    """What metrics need of a broadcast consumer."""

    def __init__(self, stats: ConsumerStats) -> None:
        self.stats = stats


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _control_topic() -> Topic[Any]:
    return next(topic for topic in ALL_TOPICS if topic.name == "control")


async def _quiet(call: Awaitable[T]) -> T | None:
    """A best-effort write or read: Redis being away only delays what depends on it."""
    try:
        return await call
    except Exception as exc:
        log.debug("best-effort Redis call failed: %s", exc)
        return None


def run_stage(stage_cls: type[Stage], settings: BusSettings | None = None) -> None:
    """Run a stage in this process until Ctrl-C or SIGTERM (REDIS_URL names the Redis)."""
    import signal

    from services.bus.settings import load_bus_settings

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await StageRuntime(stage_cls, settings or load_bus_settings()).run(stop)

    asyncio.run(main())


class Producer:
    """Publishes typed messages from a tool or a test: no handlers, no partitions.

    async with Producer(settings, "replay", [CHAT_MESSAGE]) as out:
        await out.publish(chat)
    """

    def __init__(self, settings: BusSettings, name: str, topics: Sequence[Topic[Any]]) -> None:
        attrs: dict[str, Any] = {"name": name}
        for number, topic in enumerate(topics):
            attrs[f"out{number}"] = Publishes(topic)
        stage_cls = type(f"Producer[{name}]", (Stage,), attrs)
        self.runtime: StageRuntime[Stage] = StageRuntime(stage_cls, settings)
        self._topics = {topic.model: topic for topic in topics}

    async def publish(self, message: Envelope) -> bytes | None:
        """Publish on the message's topic; returns its entry id."""
        topic = self._topics.get(type(message))
        if topic is None:
            names = ", ".join(t.name for t in self._topics.values())
            raise TypeError(f"this producer publishes {names}, not {type(message).__name__}")
        return await self.runtime.bus.publisher(topic).publish(message)

    async def __aenter__(self) -> "Producer":
        await self.runtime.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.stop()
