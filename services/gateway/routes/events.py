"""WS /ws/events: the chosen topics, live, as JSON; resumable from a position.

    ws://127.0.0.1:8765/ws/events?topics=asr.final,policy.token&session=local&since=POS

Each event is `{"topic", "position", "message"}`. A client that reconnects with
`since=<the last position it got>` misses nothing in between (services.gateway.tail).
Audio stays out unless asked for with `audio=1`: audio.frame is then allowed, and
tts.chunk keeps its PCM (base64).
"""

import asyncio
import contextlib
import json
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError

from contracts.envelope import Identifier
from contracts.topics import ALL_TOPICS, AUDIO_FRAME, TTS_CHUNK, Topic, topic_named
from services.gateway.link import BusLink
from services.gateway.security import Access, accept_websocket
from services.gateway.tail import BadPosition, StreamEvent
from services.gateway.tasks import stop_tasks

router = APIRouter(tags=["events"])
SESSION = TypeAdapter(Identifier)
DEFAULT_TOPICS = tuple(t for t in ALL_TOPICS if t is not AUDIO_FRAME)
ENCODED_KEPT = 4096
_encoded: OrderedDict[tuple[str, bool], str] = OrderedDict()


class BadQuery(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


def chosen_topics(raw: str | None, audio: bool) -> list[Topic[Any]]:
    if not raw:
        return list(DEFAULT_TOPICS)
    try:
        topics = [topic_named(name.strip()) for name in raw.split(",") if name.strip()]
    except ValueError as exc:
        raise BadQuery("query.topics", str(exc)) from None
    if AUDIO_FRAME in topics and not audio:
        raise BadQuery("query.topics", "audio.frame is only sent with audio=1")
    return topics


def event_json(event: StreamEvent, audio: bool) -> str:
    """The event as sent; made once per entry for all the clients that watch it."""
    key = (event.position, audio)
    text = _encoded.get(key)
    if text is None:
        body = event.message.model_dump(mode="json")
        if event.topic is TTS_CHUNK and not audio:
            body.pop("pcm", None)
            body["duration_s"] = round(event.message.duration_s, 3)  # type: ignore[attr-defined]
        text = json.dumps({"topic": event.topic.name, "position": event.position, "message": body})
        _encoded[key] = text
        if len(_encoded) > ENCODED_KEPT:
            _encoded.popitem(last=False)
    return text


@router.websocket("/ws/events")
async def events(websocket: WebSocket) -> None:
    if await accept_websocket(websocket, Access.READ) is None:
        return
    await websocket.accept()
    query = websocket.query_params
    audio = query.get("audio") in ("1", "true", "yes")
    try:
        topics = chosen_topics(query.get("topics"), audio)
        session = query.get("session") or None
        if session is not None:
            SESSION.validate_python(session)
        link: BusLink = websocket.app.state.link
        streams = link.tail.streams(topics, session)
        starts = await link.tail.starts(list(streams), query.get("since"))
    except ValidationError:
        await _refuse(websocket, "query.session", "a session id is 1-64 of A-Z a-z 0-9 . _ : -")
        return
    except BadQuery as exc:
        await _refuse(websocket, exc.field, str(exc))
        return
    except BadPosition as exc:
        await _refuse(websocket, "query.since", str(exc))
        return
    await websocket.send_text(json.dumps({"ready": True, "topics": [t.name for t in topics]}))

    async def pump() -> None:
        async for event in link.tail.follow(topics, session=session, starts=starts):
            await websocket.send_text(event_json(event, audio))

    tasks = [asyncio.create_task(pump()), asyncio.create_task(_until_closed(websocket))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await stop_tasks(tasks)


async def _until_closed(websocket: WebSocket) -> None:
    """Reads (and ignores) what the client sends, so a closed socket is noticed even
    while no event comes."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()


async def _refuse(websocket: WebSocket, field: str, problem: str) -> None:
    await websocket.send_text(
        json.dumps({"error": problem, "fields": [{"field": field, "problem": problem}]})
    )
    await websocket.close(code=1008, reason=problem[:120])
