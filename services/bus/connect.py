"""The Redis client of a stage: one server, or a Redis Cluster (settings.redis_cluster).

The bus keeps each partition's keys in one slot (services/bus/partitions.py), so a fenced
write runs on one node. What differs on a cluster is in the few places that ask
`is_cluster(client)`: reads and writes that span partitions are split by slot.
"""

from typing import Any, cast

from redis.asyncio import Redis, RedisCluster

from services.bus.settings import BusSettings


def bus_client(settings: BusSettings, **options: Any) -> Redis:
    """A client for settings.redis_url. A cluster client has the same commands as a Redis
    client for what the bus does; typed as one so that the bus's code stays one."""
    url = settings.redis_url or ""
    if settings.redis_cluster:
        options.pop("health_check_interval", None)  # per node connection; not an option here
        return cast(Redis, RedisCluster.from_url(url, **options))
    return Redis.from_url(url, **options)


def is_cluster(client: Redis) -> bool:
    return isinstance(cast(Any, client), RedisCluster)
