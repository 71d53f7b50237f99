"""The AsyncAPI document of the bus, generated from the stages' FastStream routers."""

import json
from pathlib import Path

from faststream.redis import RedisBroker, RedisRouter
from faststream.specification import AsyncAPI

import contracts
from contracts.topics import ALL_TOPICS, CONTROL
from services.bus.faststream_bridge import add_publisher, add_subscriber
from services.bus.stage import Stage

DOCUMENT_PATH = Path(contracts.__file__).parent / "asyncapi.json"


def _contract_router() -> RedisRouter:
    """Every topic as a channel, so the document lists all contracts, consumed or not."""
    router = RedisRouter()
    for topic in ALL_TOPICS:
        router.publisher(
            stream=topic.name,
            schema=topic.model,
            title=f"{topic.name}:contract",
            description=(
                f"{topic.description} "
                + ("Partitioned by session into <topic>.p<N> streams." if topic.ordered else "")
            ).strip(),
        )
    return router


def _stage_router(stage: type[Stage]) -> RedisRouter:
    """What a stage class declares, as FastStream channels (no instance, no model loaded)."""
    router = RedisRouter()

    async def nothing(message: object) -> None:
        return None

    for topic in stage.published_topics():
        add_publisher(router, topic, stage.name)
    consumed = [consumer.topic for consumer in stage.consumers()]
    if stage.interruptible and CONTROL not in consumed:
        consumed.append(CONTROL)  # the runtime reads it for the stage's interrupts
    for topic in consumed:
        add_subscriber(router, topic, stage.name, nothing)
    return router


def build_document(stages: list[type[Stage]]) -> str:
    # A fixed address, so the committed document does not change with the local port.
    broker = RedisBroker("redis://localhost:6379", description="Redis Streams")
    broker.include_router(_contract_router())
    for stage in stages:
        broker.include_router(_stage_router(stage))
    spec = AsyncAPI(
        broker,
        title="Marionette bus",
        version=str(contracts.SCHEMA_VERSION),
        description="Typed messages of a live AI character on Redis Streams.",
    )
    document = json.loads(spec.to_specification().to_json())
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
