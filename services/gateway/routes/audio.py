"""WS /ws/audio: a remote microphone and speaker for one session (how a Discord voice bot,
or `marionette mic` on another machine, talks to the character).

    ws://127.0.0.1:8765/ws/audio?session=discord-42&rate=48000   (+ the operator key)

Query: `session` (default `local`), `rate`: the Hz of the audio the client sends (8000,
11025, 12000, 16000, 22050, 24000, 32000, 44100 or 48000; default 16000; resampled to
16 kHz with soxr), and `key` unless sent as `Authorization: Bearer KEY`.

Once accepted, the gateway says `{"type": "ready", "session", "rate", "run"}`; nothing said
for the session before that is played to the client.

Client -> gateway, the microphone:
- binary: mono s16le PCM at `rate`, any length of whole samples, as it is captured (in
  real time). It goes on the bus as 20 ms audio.frame messages of a capture run of the
  connection's own (`run` above: message ids `<run>:<seq>`), as capture's would.
- text `{"type": "end"}`: the input ended (asr ends the utterance it has open). Audio sent
  after it starts a new run. Closing the socket ends the input the same way.

Gateway -> client, the speaker (the session's replies, as local playback would play them):
- `{"type": "chunk", "turn_id", "index", "text", "sample_rate", "final", "duration_s"}`,
  then that chunk's audio: binary messages of 20 ms of mono s16le at `sample_rate`, each
  sent when it should start to play (real time). Play them as they come, behind a small
  buffer (~100 ms) against network jitter.
- `{"type": "playing" | "paused" | "flushed" | "finished", "turn_id", "chunk_index",
  "played_s"}` as playback reports them on playback.progress: paused (someone talks over
  it: the blocks stop coming), playing (again), flushed (interrupted for good; with
  `heard_text`, what was played of the reply), finished.

Because the gateway reports this progress for the session, barge-in (asr's echo gate reads
the level of what plays), pauses, interrupts and policy's memory of what was heard work
for the remote listener exactly as for the local speakers. While a socket of a session is
open, local playback does not play that session (services.playback.stage).

Refusals: a foreign Origin or a missing/wrong key is refused at the handshake (HTTP 403);
a bad query or message gets `{"error", "fields": [{"field", "problem"}]}`, then close
1008, as does a client over its number of audio sockets, or a socket whose session a newer
socket (a reconnect) took over.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError
from redis.exceptions import RedisError

from contracts import AudioFrame
from contracts.envelope import Identifier, message_id
from services.bus.switches import read_switches
from services.capture.framer import Framer
from services.gateway.link import BusLink, new_id
from services.gateway.remote_speaker import RemoteSpeaker
from services.gateway.security import Access, accept_websocket
from services.gateway.settings import GatewaySettings
from services.gateway.tasks import stop_tasks
from services.playback.settings import PlaybackSettings
from services.playback.stage import REMOTE_SPEAKER_TTL_S, remote_speaker_key
from services.settings import load_settings

log = logging.getLogger("marionette.gateway")

router = APIRouter(tags=["audio"])
SESSION = TypeAdapter(Identifier)
RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
FRAME_MS = 20
SILENT_FRAME = bytes(FRAME_MS * 32)  # 20 ms of 16 kHz s16le
CLAIM_EVERY_S = 1.0
"""How often the remote-speaker key is renewed (it expires after REMOTE_SPEAKER_TTL_S)."""


class Refused(ValueError):
    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(problem)
        self.field = field


@dataclass(frozen=True)
class AudioQuery:
    session: str
    rate: int


def parse_query(query: Any) -> AudioQuery:
    session = query.get("session") or "local"
    try:
        SESSION.validate_python(session)
    except ValidationError:
        raise Refused("query.session", "a session id is 1-64 of A-Z a-z 0-9 . _ : -") from None
    raw = query.get("rate") or "16000"
    if not raw.isdigit() or int(raw) not in RATES:
        rates = ", ".join(map(str, RATES))
        raise Refused("query.rate", f"rate={raw!r}: send mono s16le at one of {rates} Hz")
    return AudioQuery(session, int(raw))


@dataclass
class AudioSockets:
    """This gateway's open /ws/audio sockets: per client (the cap) and per session (one
    speaker each: a newer socket, say a reconnect, takes the session over)."""

    per_client: Counter[str] = field(default_factory=Counter)
    speakers: dict[str, asyncio.Event] = field(default_factory=dict)

    def admit(self, who: str, limit: int) -> bool:
        if self.per_client[who] >= limit:
            return False
        self.per_client[who] += 1
        return True

    def take_session(self, session: str) -> asyncio.Event:
        """The event set when a newer socket takes the session over."""
        older = self.speakers.get(session)
        if older is not None:
            older.set()
        self.speakers[session] = taken_over = asyncio.Event()
        return taken_over

    def leave(self, who: str, session: str, taken_over: asyncio.Event) -> bool:
        """True when it was the session's socket (its claim is to be released)."""
        self.per_client[who] -= 1
        if self.per_client[who] <= 0:
            del self.per_client[who]
        if self.speakers.get(session) is taken_over:
            del self.speakers[session]
            return True
        return False


def open_sockets(websocket: WebSocket) -> AudioSockets:
    state = websocket.app.state
    if getattr(state, "audio_sockets", None) is None:
        state.audio_sockets = AudioSockets()
    sockets: AudioSockets = state.audio_sockets
    return sockets


@dataclass
class _Run:
    origin: str
    framer: Framer
    started: float  # wall time of its first sample
    seq: int = 0


class Microphone:
    """The client's audio in: 20 ms 16 kHz frames of a capture run of its own, on the bus."""

    def __init__(self, session: str, rate: int, link: BusLink) -> None:
        self.session = session
        self.rate = rate
        self.link = link
        self.run = new_id("mic")  # the first run's origin (said in "ready")
        self._open: _Run | None = None

    async def push(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise Refused("message", f"a binary message of {len(pcm)} bytes: send whole s16le "
                          "samples (an even number of bytes)")  # fmt: skip
        if self._open is None:
            self._open = _Run(self.run, Framer(self.rate, FRAME_MS), time.time())
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        for frame in self._open.framer.push(samples):
            await self._publish(self._open, frame, last=False)

    async def end(self) -> None:
        """The input ended: the rest, padded to a whole frame, marked as the last."""
        run, self._open = self._open, None
        if run is None:
            return
        self.run = new_id("mic")
        tail = run.framer.push(np.zeros(0, dtype=np.float32), last=True) or [SILENT_FRAME]
        for number, frame in enumerate(tail):
            await self._publish(run, frame, last=number == len(tail) - 1)

    async def _publish(self, run: _Run, pcm: bytes, last: bool) -> None:
        await self.link.publish(
            AudioFrame(
                session_id=self.session, message_id=message_id(run.origin, run.seq), seq=run.seq,
                pcm=pcm, captured_at=run.started + run.seq * FRAME_MS / 1000, end_of_input=last,
            )
        )  # fmt: skip
        run.seq += 1


@router.websocket("/ws/audio")
async def audio(websocket: WebSocket) -> None:
    who = await accept_websocket(websocket, Access.OPERATE)
    if who is None:
        return
    await websocket.accept()
    try:
        query = parse_query(websocket.query_params)
    except Refused as exc:
        await refuse(websocket, exc.field, str(exc))
        return
    settings: GatewaySettings = websocket.app.state.settings
    sockets = open_sockets(websocket)
    limit = settings.audio_streams_per_client
    if not sockets.admit(who, limit):
        await refuse(websocket, None, f"this client has {limit} /ws/audio sockets open already "
                     "(MARIONETTE_GATEWAY_AUDIO_STREAMS_PER_CLIENT): close one first")  # fmt: skip
        return
    taken_over = sockets.take_session(query.session)
    link: BusLink = websocket.app.state.link
    try:
        await serve(websocket, link, query, taken_over)
    finally:
        if sockets.leave(who, query.session, taken_over):
            await release_claim(link, query.session)


async def serve(
    websocket: WebSocket, link: BusLink, query: AudioQuery, taken_over: asyncio.Event
) -> None:
    speaker = RemoteSpeaker(
        query.session, websocket, link.publish, load_settings(PlaybackSettings),
        link.bus.replica_id,
    )  # fmt: skip
    session_topics, shared_topics = speaker.session_topics(), speaker.shared_topics()
    tail = link.tail
    # Where the speaker starts reading, taken before any audio is accepted: the reply to
    # the client's first words cannot come before it.
    session_starts = await tail.starts(list(tail.streams(session_topics, query.session)), None)
    shared_starts = await tail.starts(list(tail.streams(shared_topics, None)), None)
    speaker.restore(await read_switches(link.client))
    await claim(link, query.session)
    mic = Microphone(query.session, query.rate, link)
    await websocket.send_json({"type": "ready", "session": query.session, "rate": query.rate,
                               "run": mic.run})  # fmt: skip
    feeds = (
        tail.follow(session_topics, session=query.session, starts=session_starts),
        tail.follow(shared_topics, starts=shared_starts),  # a panic is for every session
    )
    tasks = {
        asyncio.create_task(listen(websocket, mic), name="mic"): "mic",
        asyncio.create_task(speaker.run(*feeds), name="speaker"): "speaker",
        asyncio.create_task(keep_claim(link, query.session), name="claim"): "claim",
        asyncio.create_task(taken_over.wait(), name="taken-over"): "taken over",
    }
    refusal: Refused | None = None
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if tasks[task] == "taken over":
                refusal = Refused("query.session", f"a newer /ws/audio socket took session "
                                  f"{query.session!r} over")  # fmt: skip
            elif (error := task.exception()) is not None:
                if isinstance(error, Refused):
                    refusal = error
                elif isinstance(error, WebSocketDisconnect | RuntimeError | OSError):
                    log.debug("/ws/audio %s: client gone (%r)", query.session, error)
                else:
                    log.error("/ws/audio %s: %s failed: %r", query.session, tasks[task], error)
    finally:
        await stop_tasks(tasks)
        await end_input(mic)
    if refusal is not None:  # (nothing else sends now)
        await refuse(websocket, refusal.field, str(refusal))


async def end_input(mic: Microphone) -> None:
    """asr ends the utterance it has open (best effort: the gateway may be stopping)."""
    try:
        await mic.end()
    except Exception as exc:
        log.warning("/ws/audio %s: the end of the input was not published: %s", mic.session, exc)


async def listen(websocket: WebSocket, mic: Microphone) -> None:
    """The client's messages, until it closes."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await mic.push(message["bytes"])
            continue
        try:
            command = json.loads(message.get("text") or "")
        except json.JSONDecodeError:
            command = None
        if not isinstance(command, dict) or command.get("type") != "end":
            raise Refused("message.type", 'text messages are commands: {"type": "end"}')
        await mic.end()


async def claim(link: BusLink, session: str) -> None:
    """Tell local playback that this session's speaker is here (services.playback.stage)."""
    key = remote_speaker_key(session)
    await link.client.set(key, link.bus.replica_id, ex=REMOTE_SPEAKER_TTL_S)


async def keep_claim(link: BusLink, session: str) -> None:
    while True:
        await asyncio.sleep(CLAIM_EVERY_S)
        try:
            await claim(link, session)
        except RedisError as exc:  # a blip: the key lasts a few renewals
            log.warning("/ws/audio %s: cannot renew the remote speaker claim: %s", session, exc)


async def release_claim(link: BusLink, session: str) -> None:
    """Local playback plays the session again (unless another gateway holds it now)."""
    key = remote_speaker_key(session)
    with contextlib.suppress(RedisError):
        if await link.client.get(key) == link.bus.replica_id.encode():
            await link.client.delete(key)


async def refuse(websocket: WebSocket, field: str | None, problem: str) -> None:
    """The JSON error, then close 1008 with the problem as the reason."""
    fields = [{"field": field, "problem": problem}] if field else []
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_json({"error": problem, "fields": fields})
        await websocket.close(code=1008, reason=problem[:120])
