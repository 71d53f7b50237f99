"""The Bus a stage gets under StageRuntime: publishers, checkpointed state, interrupts.

Publishes of a stage that owns partitions are fenced (services.bus.fencing): the message
goes out in the same script as the state the handler changed, and only while this replica
owns the session's partition.
"""

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from redis.asyncio import Redis

from contracts.envelope import Envelope
from contracts.topics import Topic
from services.bus.causes import cause_headers
from services.bus.connect import is_cluster
from services.bus.delivery import Delivery, current_delivery, write_while_owned
from services.bus.faststream_bridge import FencedPublish, fenced_publish
from services.bus.fencing import Fence, Fenced, Writes
from services.bus.interrupts import InterruptedTurns
from services.bus.ownership import lease_key
from services.bus.partitions import partition_of, stream_for
from services.bus.presence import replicas_seen
from services.bus.recovery import REDIS_UNAVAILABLE, Backoff, raise_if_cancelling
from services.bus.settings import BusSettings
from services.bus.stage import KeyValue, SessionMemory
from services.bus.state import RedisState
from services.bus.switches import StageSwitch

M = TypeVar("M", bound=Envelope)
S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")


class BusNotRunning(RuntimeError):
    """A publisher was used outside a running StageRuntime."""


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
        # FastStream's own connection knows no cluster: there, the XADD goes through the
        # bus's client (the same script, without a fence).
        plan = FencedPublish(Fence.none(), Writes(), self.bus.write) if self.bus.cluster else None
        while True:
            token = fenced_publish.set(plan)
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
            finally:
                fenced_publish.reset(token)


class RedisBus:
    """The Bus a stage gets under StageRuntime (services.bus.stage.Bus)."""

    def __init__(
        self,
        *,
        group: str,
        replica_id: str,
        settings: BusSettings,
        client: Redis,
        interrupts: InterruptedTurns,
        fence: Callable[[int], Fence | None] | None,
        switch: StageSwitch | None = None,
    ) -> None:
        """fence(partition): the fence of a partition this replica holds now; None for a
        stage that owns no partitions (it writes unfenced); switch: the stage's switches
        (None: a tool, never switched off)."""
        self.group = group
        self.replica_id = replica_id
        self.settings = settings
        self.client = client
        self.cluster = is_cluster(client)
        self.interrupts = interrupts
        self._fence = fence
        self.switch = switch
        self.on_status_changed: Callable[[], None] | None = None  # the heartbeat's, if any
        self.store: KeyValue = cast(KeyValue, client)
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
                f"stage {self.group} publishes {topic.name} without "
                f"declaring it: add `name = Publishes({topic.name.upper().replace('.', '_')})` "
                "to its class"
            ) from None

    def state(self, name: str, model: type[S]) -> RedisState[S]:
        if name not in self._states:
            self._states[name] = RedisState(
                self.client, group=self.group, name=name, model=model,
                partitions=self.settings.partitions,
            )  # fmt: skip
        return self._states[name]

    def memory(self, make: Callable[[str], T]) -> SessionMemory[T]:
        memory = SessionMemory(make)
        self._memories.append(memory)
        return memory

    def interrupted(self, session_id: str, turn_id: str | None) -> bool:
        return turn_id is not None and self.interrupts.covers_turn(session_id, turn_id)

    def switched_off(self) -> bool:
        return self.switch is not None and self.switch.off

    def status_changed(self) -> None:
        if self.on_status_changed is not None:
            self.on_status_changed()

    async def stage_running(self, stage: str) -> bool:
        now = time.time()
        return any(r.stage == stage and r.alive(now) for r in await replicas_seen(self.client))

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
        return await write_while_owned(self.client, fence, writes)

    def fence_for(self, session_id: str, delivery: Delivery | None) -> Fence | None:
        """None: this stage owns no partitions, so it writes unfenced (capture, tools)."""
        if self._fence is None:
            return None
        partition = partition_of(session_id, self.settings.partitions)
        if delivery is not None and delivery.fence.lease_key == lease_key(self.group, partition):
            return delivery.fence
        fence = self._fence(partition)
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
