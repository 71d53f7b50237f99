"""The one place that reaches into FastStream's internals (pinned to faststream==0.7.8).

FastStream's own Redis stream loop acknowledges and redelivers in ways that lose messages
(see shared/models.md). The runtime therefore connects the broker and prepares publishers
and subscribers without starting FastStream's fetch loops, then feeds entries to each
subscriber's process_message itself. Its producer is swapped for one that runs a publish
as a fenced write when the runtime asks for one (services.bus.fencing). (tracing.py
subclasses FastStream's telemetry middleware, the other such place.)
"""

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from faststream import AckPolicy
from faststream._internal.endpoint.subscriber.usecase import SubscriberUsecase
from faststream.redis import RedisBroker, RedisRouter, StreamSub
from faststream.redis.message import DATA_KEY
from faststream.redis.prometheus import RedisPrometheusMiddleware
from faststream.redis.publisher.producer import RedisFastProducer
from faststream.redis.response import DestinationType, RedisPublishCommand

from contracts.topics import Topic
from services.bus.fencing import Fence, Writes
from services.bus.tracing import TopicTracingMiddleware
from services.telemetry.metrics import REGISTRY


@dataclass(frozen=True)
class FencedPublish:
    """How the next XADD of this task must be written: behind a fence, with other writes."""

    fence: Fence
    writes: Writes
    run: Callable[[Fence, Writes], Any]


fenced_publish: ContextVar[FencedPublish | None] = ContextVar("marionette_fenced", default=None)


class FencedProducer(RedisFastProducer):
    async def publish(self, cmd: RedisPublishCommand) -> int | bytes:
        plan = fenced_publish.get()
        if plan is None or cmd.destination_type is not DestinationType.Stream:
            return await super().publish(cmd)
        data = await cmd.message_format.encode(
            message=cmd.body,
            reply_to=cmd.reply_to,
            headers=cmd.headers,
            correlation_id=cmd.correlation_id or "",
            serializer=self.serializer,
            codec=self.codec,
        )
        writes = (
            Writes()
            .extend(plan.writes)
            .xadd(cmd.destination, cmd.maxlen or 0, {DATA_KEY.encode(): data})
        )
        entry_id: bytes = await plan.run(plan.fence, writes)
        return entry_id


class MarionetteBroker(RedisBroker):
    def _make_producer(self, connection_state: Any, kwargs: dict[str, Any]) -> FencedProducer:
        return FencedProducer(
            connection=connection_state,
            parser=kwargs.get("parser"),
            decoder=kwargs.get("decoder"),
            message_format=self.message_format,
            serializer=kwargs.get("serializer"),
        )


def make_broker(url: str, router: RedisRouter, stage_name: str) -> RedisBroker:
    broker = MarionetteBroker(
        url,
        middlewares=(
            TopicTracingMiddleware(),
            # Handler time and counts per stage ("app_name") and stream ("handler").
            RedisPrometheusMiddleware(registry=REGISTRY, app_name=stage_name),
        ),
        # FastStream logs every message at its log level; per-message lines belong in DEBUG.
        log_level=logging.DEBUG,
    )
    broker.include_router(router)
    return broker


def add_subscriber(
    router: RedisRouter, topic: Topic[Any], group: str, handler: Callable[[Any], Any]
) -> Any:
    """A FastStream subscriber of the topic for `handler(message)`, typed by its model.

    The stream named here is only the contract's name (for the AsyncAPI document): the
    runtime feeds the subscriber entries of the partition streams itself."""

    async def handle(message: Any) -> None:
        await handler(message)

    handle.__annotations__ = {"message": topic.model, "return": None}
    handle.__name__ = getattr(handler, "__name__", "handle")
    subscriber = router.subscriber(
        stream=StreamSub(topic.name, group=group, consumer=group),
        ack_policy=AckPolicy.MANUAL,
        title=f"{topic.name}:{group}:consume",
        description=topic.description,
    )
    subscriber(handle)
    return subscriber


def add_publisher(router: RedisRouter, topic: Topic[Any], group: str) -> Any:
    return router.publisher(
        stream=topic.name,
        schema=topic.model,
        title=f"{topic.name}:{group}:publish",
        description=topic.description,
    )


async def start_without_fetch_loops(broker: RedisBroker) -> None:
    await broker.connect()
    for publisher in broker.publishers:
        await publisher.start()
    for subscriber in broker.subscribers:
        await SubscriberUsecase.start(subscriber)
        subscriber.running = True


def subscriber_ready(subscriber: Any) -> bool:
    return bool(getattr(subscriber, "running", False))
