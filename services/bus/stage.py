"""A stage: typed handlers declared FastStream-style, run with at-least-once delivery.

    stage = Stage("echo")
    replies = stage.publisher(CHAT_MESSAGE)

    @stage.consumer(ASR_FINAL)
    async def on_final(final: AsrFinal) -> None:
        await replies.publish(ChatMessage(...))

    asyncio.run(StageRuntime(stage, load_bus_settings()).run())

Handlers are ordinary FastStream subscribers on a RedisRouter (typed pydantic arguments,
dependency injection, telemetry); the runtime owns reading, acknowledging, claiming,
dead letters, duplicates and partitions.
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from faststream import AckPolicy
from faststream.redis import RedisBroker, RedisRouter, StreamSub
from redis.asyncio import Redis

from contracts.envelope import Envelope
from contracts.topics import Topic
from services.bus.causes import cause_headers
from services.bus.dead_letters import dead_letter_stream
from services.bus.dedup import Deduplicator, HandledIds, HighWaterMarks
from services.bus.delivery import ConsumerStats, EntryProcessor
from services.bus.faststream_bridge import make_broker, start_without_fetch_loops
from services.bus.interrupts import InterruptedTurns
from services.bus.leases import PartitionLeases
from services.bus.partitions import stream_for, streams_of
from services.bus.readers import PartitionedReader, SharedReader
from services.bus.recovery import REDIS_UNAVAILABLE, Backoff, raise_if_cancelling
from services.bus.settings import BusSettings
from services.telemetry import metrics

log = logging.getLogger("marionette.bus")

M = TypeVar("M", bound=Envelope)
Handler = TypeVar("Handler", bound=Callable[..., Any])


class BusNotRunning(RuntimeError):
    """A publisher was used outside a running StageRuntime."""


class TopicPublisher(Generic[M]):
    """Publishes one topic's messages to the right (partition) stream, through outages."""

    def __init__(self, topic: Topic[M], faststream_publisher: Any) -> None:
        self.topic = topic
        self._publisher = faststream_publisher
        self._settings: BusSettings | None = None

    def bind(self, settings: BusSettings | None) -> None:
        self._settings = settings

    async def publish(self, message: M, *, timeout_s: float = 30.0) -> bytes:
        """XADD the message (MAXLEN ~ from settings); returns its entry id.

        A publish that fails because Redis is away is retried until timeout_s; a retried
        publish may land twice, which consumers drop as a duplicate.
        """
        settings = self._settings
        if settings is None:
            raise BusNotRunning(f"publish to {self.topic.name} outside a running StageRuntime")
        if not isinstance(message, self.topic.model):
            raise TypeError(
                f"{self.topic.name} carries {self.topic.model.__name__}, "
                f"not {type(message).__name__}"
            )
        stream = stream_for(self.topic, message.session_id, settings.partitions)  # type: ignore[arg-type]
        maxlen = settings.maxlen_for(self.topic.name, self.topic.maxlen)
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


@dataclass(frozen=True)
class ConsumerSpec:
    topic: Topic[Any]
    subscriber: Any
    handler: Callable[..., Any]
    drop_interrupted: bool = False


class Stage:
    """A stage's declarations: what it consumes and what it publishes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.router = RedisRouter()
        self.consumers: list[ConsumerSpec] = []
        self.publishers: list[TopicPublisher[Any]] = []
        self.interrupted = InterruptedTurns()
        """Turns this stage was told to interrupt (its control handler adds them)."""

    def publisher(self, topic: Topic[M]) -> TopicPublisher[M]:
        faststream_publisher = self.router.publisher(
            stream=topic.name,
            schema=topic.model,
            title=f"{topic.name}:{self.name}:publish",
            description=topic.description,
        )
        publisher = TopicPublisher(topic, faststream_publisher)
        self.publishers.append(publisher)
        return publisher

    def consumer(
        self, topic: Topic[Any], *, drop_interrupted: bool = False
    ) -> Callable[[Handler], Handler]:
        """Declare the handler of a topic. drop_interrupted: entries of a turn in
        `self.interrupted` are acknowledged without calling it (late work of that turn)."""
        if any(spec.topic.name == topic.name for spec in self.consumers):
            raise ValueError(f"stage {self.name} already consumes {topic.name}")
        subscriber = self.router.subscriber(
            stream=StreamSub(topic.name, group=self.name, consumer=self.name),
            ack_policy=AckPolicy.MANUAL,
            title=f"{topic.name}:{self.name}:consume",
            description=topic.description,
        )

        def register(handler: Handler) -> Handler:
            subscriber(handler)
            self.consumers.append(ConsumerSpec(topic, subscriber, handler, drop_interrupted))
            return handler

        return register


def new_replica_id(stage_name: str) -> str:
    return f"{stage_name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class StageRuntime:
    """Runs a Stage against Redis until stopped.

    Use `await runtime.run()` for a stage process, or `async with runtime:` to publish
    (and consume in the background) from a script or a test.
    """

    def __init__(
        self, stage: Stage, settings: BusSettings, *, replica_id: str | None = None
    ) -> None:
        if not settings.redis_url:
            raise ValueError("StageRuntime needs settings.redis_url (see services.bus.server)")
        self.stage = stage
        self.settings = settings
        self.replica_id = replica_id or new_replica_id(stage.name)
        self.broker: RedisBroker = make_broker(settings.redis_url, stage.router, stage.name)
        # A blocking XREADGROUP must not hit the socket timeout (redis-py's default is 5 s).
        self.client: Redis = Redis.from_url(
            settings.redis_url,
            health_check_interval=5,
            socket_timeout=settings.block_ms / 1000 + 10,
            socket_connect_timeout=5,
        )
        self.processors: dict[str, EntryProcessor] = {}
        self._readers: list[SharedReader | PartitionedReader] = []
        self._task: asyncio.Task[None] | None = None

    def stats(self, topic_name: str) -> ConsumerStats:
        return self.processors[topic_name].stats

    # What /metrics reads (services.telemetry.metrics.WatchedRuntime).
    @property
    def group(self) -> str:
        return self.stage.name

    @property
    def redis_url(self) -> str:
        return self.settings.redis_url or ""

    def consumer_counts(self) -> dict[str, ConsumerStats]:
        return {name: processor.stats for name, processor in self.processors.items()}

    def consumed_streams(self) -> list[tuple[str, str]]:
        return [
            (spec.topic.name, stream)
            for spec in self.stage.consumers
            for stream in streams_of(spec.topic, self.settings.partitions)
        ]

    def dead_letter_streams(self) -> dict[str, str]:
        return {
            spec.topic.name: dead_letter_stream(spec.topic.name) for spec in self.stage.consumers
        }

    async def start(self) -> None:
        await start_without_fetch_loops(self.broker)
        for publisher in self.stage.publishers:
            publisher.bind(self.settings)
        self.processors, self._readers = {}, []  # a restarted runtime starts afresh
        for spec in self.stage.consumers:
            processor = EntryProcessor(
                client=self.client,
                topic=spec.topic,
                group=self.stage.name,
                consumer=self.replica_id,
                subscriber=spec.subscriber,
                dedup=self._deduplicator(spec.topic),
                settings=self.settings,
                stale=self.stage.interrupted.covers if spec.drop_interrupted else None,
            )
            self.processors[spec.topic.name] = processor
            self._readers.append(self._reader(processor))
        self._task = asyncio.create_task(self._read_all(), name=f"{self.stage.name}-readers")
        metrics.watch(self)

    def _deduplicator(self, topic: Topic[Any]) -> Deduplicator:
        kind = HighWaterMarks if topic.ordered else HandledIds
        return kind(self.client, self.stage.name, topic.name, self.settings.dedup_ttl_s)

    def _reader(self, processor: EntryProcessor) -> SharedReader | PartitionedReader:
        topic = processor.topic
        if not topic.ordered:
            return SharedReader(processor, topic.name)
        leases = PartitionLeases(
            self.client,
            group=self.stage.name,
            topic_name=topic.name,
            replica_id=self.replica_id,
            partitions=self.settings.partitions,
            lease_ms=self.settings.lease_ms,
        )
        return PartitionedReader(processor, leases, topic.overflow)

    async def _read_all(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for reader in self._readers:
                tasks.create_task(reader.run())

    async def stop(self) -> None:
        """Finish in-flight entries, hand partitions back, disconnect."""
        metrics.unwatch(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for publisher in self.stage.publishers:
            publisher.bind(None)
        await self.broker.stop()
        await self.client.aclose()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set (or forever)."""
        await self.start()
        log.info("stage %s running as %s", self.stage.name, self.replica_id)
        try:
            if stop is None:
                assert self._task is not None
                await self._task
            else:
                await stop.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> "StageRuntime":
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
