"""GET /api/status: the character, its stages, their backlog, dead letters, latest turns."""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from redis.asyncio import Redis

from contracts.topics import ALL_TOPICS
from services.bus.dead_letters import dead_letter_stream
from services.bus.partitions import streams_of, topic_of_stream
from services.bus.presence import replicas_seen
from services.bus.switches import read_switches
from services.gateway.link import BusLink
from services.gateway.security import Access, requires
from services.registry import MODULES

router = APIRouter(prefix="/api", tags=["status"])
Reader = Annotated[str, Depends(requires(Access.READ))]


@router.get("/status")
async def status(request: Request, who: Reader) -> dict[str, Any]:
    """Persona, modules, every stage's replicas (heartbeat, restarts) with the lag and
    pending entries of each topic it reads, dead letters per topic, and the latest turns
    with their latency (voice-to-voice for spoken turns)."""
    link: BusLink = request.app.state.link
    personas = link.personas
    switches = await read_switches(link.client)
    persona = await personas.current()
    stages = await _stages(link)
    return {
        "persona": persona.model_dump(mode="json"),
        "personas": personas.names(),
        "modules": {name: switches.modules.get(name, True) for name in MODULES},
        "panic": switches.panic,
        "stages": stages,
        "dead_letters": await _dead_letters(link.client),
        "turns": link.turns.latest(link.settings.recent_turns),
        "gateway": {"replica": link.bus.replica_id},
    }


async def _stages(link: BusLink) -> dict[str, dict[str, Any]]:
    now = time.time()
    stages: dict[str, dict[str, Any]] = {}
    for seen in await replicas_seen(link.client):
        entry = stages.setdefault(seen.stage, {"replicas": [], "topics": {}})
        entry["replicas"].append({
            "replica": seen.replica, "host": seen.host, "pid": seen.pid,
            "alive": seen.alive(now), "last_heartbeat_s": round(now - seen.beat_at, 1),
            "started_at": seen.started_at, "restarts": max(0, seen.starts - 1),
            **({"detail": seen.detail} if seen.detail is not None else {}),
        })  # fmt: skip
    for stream, groups in (await _groups(link.client, link.bus_settings.partitions)).items():
        topic = topic_of_stream(stream)
        if topic is None:
            continue
        for group in groups:
            name = _text(group.get("name"))
            entry = stages.setdefault(name, {"replicas": [], "topics": {}})
            backlog = entry["topics"].setdefault(topic.name, {"lag": 0, "pending": 0})
            backlog["lag"] += int(group.get("lag") or 0)
            backlog["pending"] += int(group.get("pending") or 0)
    return dict(sorted(stages.items()))


async def _groups(client: Redis, partitions: int) -> dict[str, list[dict[str, Any]]]:
    """XINFO GROUPS of every stream of every topic (a stream nobody reads yet has none)."""
    streams = [s for topic in ALL_TOPICS if topic.ordered for s in streams_of(topic, partitions)]
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
    answers = await pipe.execute(raise_on_error=False)
    return {
        stream: [{_text(k): v for k, v in group.items()} for group in answer]
        for stream, answer in zip(streams, answers, strict=True)
        if isinstance(answer, list)
    }


async def _dead_letters(client: Redis) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for topic in ALL_TOPICS:
        pipe.xlen(dead_letter_stream(topic.name))
    counts = await pipe.execute(raise_on_error=False)
    return {
        topic.name: count
        for topic, count in zip(ALL_TOPICS, counts, strict=True)
        if isinstance(count, int) and count
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
