"""The one place that reaches into FastStream's internals (pinned to faststream==0.7.8).

FastStream's own Redis stream loop acknowledges and redelivers in ways that lose messages
(see shared/models.md). The runtime therefore connects the broker and prepares publishers
and subscribers without starting FastStream's fetch loops, then feeds entries to each
subscriber's process_message itself. (tracing.py subclasses FastStream's telemetry
middleware, the other such place.)
"""

import logging
from typing import Any

from faststream._internal.endpoint.subscriber.usecase import SubscriberUsecase
from faststream.redis import RedisBroker, RedisRouter
from faststream.redis.prometheus import RedisPrometheusMiddleware

from services.bus.tracing import TopicTracingMiddleware
from services.telemetry.metrics import REGISTRY


def make_broker(url: str, router: RedisRouter, stage_name: str) -> RedisBroker:
    broker = RedisBroker(
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


async def start_without_fetch_loops(broker: RedisBroker) -> None:
    await broker.connect()
    for publisher in broker.publishers:
        await publisher.start()
    for subscriber in broker.subscribers:
        await SubscriberUsecase.start(subscriber)
        subscriber.running = True


def subscriber_ready(subscriber: Any) -> bool:
    return bool(getattr(subscriber, "running", False))
