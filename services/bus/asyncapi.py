"""The AsyncAPI document of the bus, generated from the stages' FastStream routers."""

import json
from pathlib import Path

from faststream.redis import RedisBroker, RedisRouter
from faststream.specification import AsyncAPI

import contracts
from contracts.topics import ALL_TOPICS
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


def build_document(stages: list[Stage]) -> str:
    # A fixed address, so the committed document does not change with the local port.
    broker = RedisBroker("redis://localhost:6379", description="Redis Streams")
    broker.include_router(_contract_router())
    for stage in stages:
        broker.include_router(stage.router)
    spec = AsyncAPI(
        broker,
        title="Marionette bus",
        version=str(contracts.SCHEMA_VERSION),
        description="Typed messages of a live AI character on Redis Streams.",
    )
    document = json.loads(spec.to_specification().to_json())
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
