"""`marionette mic`: a microphone and speaker for the character, over the gateway's WS
/ws/audio (the protocol: services.gateway.routes.audio).

It streams the microphone, or a sound file in real time, to a session, and plays the
replies as they come: through the speakers when there are some, else into a WAV file per
turn. Each reply's text is printed as it arrives. This is how another machine, or a
Discord voice bot, talks to the character.
"""

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import typer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from contracts.limits import AUDIO_SAMPLE_RATE
from services.capture.framer import Framer
from services.capture.sources import AudioSource, FileSource, MicrophoneSource
from services.cli.common import console, fail, out
from services.errors import StageStartError
from services.playback.sinks import AudioSink, open_sink

FRAME_MS = 20
LINGER_S = 2.0
"""After a file's replies have played: how long to wait for another before leaving."""
REPLY_WAIT_S = 120.0
"""After a file ended: how long to wait for a reply to begin."""
OUTPUTS = ("auto", "speaker", "wav")
INPUT_HELP = "A sound file to send, in real time (WAV, FLAC, OGG); default: the microphone."
DURATION_HELP = (
    "Stop after this many seconds (default: a microphone until Ctrl-C, a file once its "
    "replies have played)."
)


class GatewayRefused(Exception):
    """The gateway answered with an error (a bad query, a bad key, too many sockets)."""


def audio_url(to: str, session: str, key: str | None) -> str:
    """`to` with the session and rate set (the key travels in a header, not the URL)."""
    parts = urlsplit(to)
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(to, "use ws://HOST:PORT/ws/audio (or wss://)")
    query = dict(parse_qsl(parts.query))
    query.update(session=session, rate=str(AUDIO_SAMPLE_RATE))
    return urlunsplit(parts._replace(path=parts.path or "/ws/audio", query=urlencode(query)))


@dataclass
class Replies:
    """What the gateway has played to us so far."""

    sink: AudioSink
    session: str
    playing: set[str] = field(default_factory=set)
    turn: str = ""
    rate: int = 0
    ended: int = 0  # turns over (finished or flushed)
    last_heard: float = field(default_factory=time.monotonic)

    async def on_message(self, message: str | bytes) -> None:
        self.last_heard = time.monotonic()
        if isinstance(message, bytes):
            if self.turn:
                await self.sink.write(self.session, self.turn, message, self.rate)
            return
        event: dict[str, Any] = json.loads(message)
        if "error" in event:
            raise GatewayRefused(event["error"])
        kind = event.get("type")
        turn = str(event.get("turn_id") or "")
        if kind == "chunk":
            if turn not in self.playing:
                self.playing.add(turn)
                out.print(f"[bold]{turn}[/]:", end=" ", highlight=False)
            self.turn, self.rate = turn, int(event["sample_rate"])
            if event.get("text"):
                out.print(event["text"], end=" ", markup=False, highlight=False)
        elif kind in ("finished", "flushed") and turn in self.playing:
            self.playing.discard(turn)
            self.ended += 1
            path = self.sink.end_turn(self.session, turn)
            cut = f" (interrupted; heard: {event.get('heard_text')!r})" if kind == "flushed" else ""
            where = f" -> {path}" if path is not None else ""
            out.print(f"{cut}{where}", markup=False, highlight=False)

    def close(self) -> None:
        """Leaving mid-reply: what was played of it stays a valid WAV file."""
        for turn in sorted(self.playing):
            self.sink.end_turn(self.session, turn)
        self.playing.clear()

    def settled(self, ended_before: int) -> bool:
        """A reply came and ended since, none plays, and a while went by without another."""
        quiet_s = time.monotonic() - self.last_heard
        return self.ended > ended_before and not self.playing and quiet_s >= LINGER_S


async def send_audio(socket: ClientConnection, source: AudioSource) -> None:
    """The source as 16 kHz 20 ms frames, in real time; then the end of the input."""
    framer = Framer(source.sample_rate, FRAME_MS)
    pace = not source.realtime_source
    started = time.monotonic()
    sent = 0
    async for block in source.blocks():
        for frame in framer.push(block):
            if pace:
                await asyncio.sleep(max(0.0, started + sent * FRAME_MS / 1000 - time.monotonic()))
            await socket.send(frame)
            sent += 1
    for frame in framer.push(np.zeros((0, 1), dtype=np.float32), last=True):
        await socket.send(frame)
    await socket.send(json.dumps({"type": "end"}))


async def receive(socket: ClientConnection, replies: Replies) -> None:
    async for message in socket:
        await replies.on_message(message)


async def until_done(
    replies: Replies, sending: "asyncio.Task[None]", duration: float | None
) -> None:
    """A file: until its replies have played (or none came). A microphone: forever. Either
    way at most `duration` seconds."""
    deadline = None if duration is None else time.monotonic() + duration
    input_ended: float | None = None
    ended_before = 0
    while deadline is None or time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if not sending.done():
            continue
        sending.result()  # raises what stopped it
        if input_ended is None:
            input_ended, ended_before = time.monotonic(), replies.ended
        if replies.settled(ended_before):
            return
        if not replies.playing and time.monotonic() - input_ended > REPLY_WAIT_S:
            console.print(f"no reply within {REPLY_WAIT_S:.0f} s of the end of the input")
            return


async def talk(
    url: str, key: str | None, source: AudioSource, replies: Replies, duration: float | None
) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with connect(url, additional_headers=headers, max_size=1 << 20) as socket:
        ready = json.loads(await socket.recv())
        if "error" in ready:
            raise GatewayRefused(ready["error"])
        console.print(f"connected to {url.split('?')[0]}, session {ready['session']}: talk")
        sending = asyncio.create_task(send_audio(socket, source))
        receiving = asyncio.create_task(receive(socket, replies))
        waiting = asyncio.create_task(until_done(replies, sending, duration))
        tasks = [sending, receiving, waiting]
        try:
            await asyncio.wait([receiving, waiting], return_when=asyncio.FIRST_COMPLETED)
            for task in (receiving, waiting):
                if task.done():
                    task.result()
            if receiving.done() and socket.close_reason:
                raise GatewayRefused(socket.close_reason)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            replies.close()


def mic(
    to: Annotated[str, typer.Option(help="The gateway's audio socket.")] = (
        "ws://127.0.0.1:8765/ws/audio"
    ),
    input: Annotated[Path | None, typer.Option("--input", "-i", help=INPUT_HELP)] = None,
    session: Annotated[str, typer.Option(help="The conversation to join.")] = "local",
    key: Annotated[
        str | None,
        typer.Option(envvar="MARIONETTE_GATEWAY_OPERATOR_KEY", help="The gateway's operator key."),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option(help="Where replies go as SESSION/TURN.wav when not to speakers.")
    ] = Path(".marionette/mic"),
    output: Annotated[
        str, typer.Option(help="auto: the speakers when there are some, else WAV files.")
    ] = "auto",
    device: Annotated[str | None, typer.Option(help="Microphone id or name.")] = None,
    duration: Annotated[float | None, typer.Option(help=DURATION_HELP)] = None,
) -> None:
    """Talk to the character through the gateway: a microphone or a file in, replies out."""
    if output not in OUTPUTS:
        raise fail(f"--output {output!r}: one of {', '.join(OUTPUTS)}")
    try:
        url = audio_url(to, session, key)
        source: AudioSource = FileSource(input) if input else MicrophoneSource(device)
        sink = open_sink(output, None, out_dir, realtime=False)  # the gateway paces it
        asyncio.run(talk(url, key, source, Replies(sink, session), duration))
    except StageStartError as exc:
        raise fail(str(exc)) from None
    except InvalidURI as exc:
        raise fail(f"--to {to!r}: {exc}") from None
    except InvalidStatus as exc:
        raise fail(f"the gateway refused the connection (HTTP {exc.response.status_code}): "
                   "check --key / MARIONETTE_GATEWAY_OPERATOR_KEY") from None  # fmt: skip
    except GatewayRefused as exc:
        raise fail(f"the gateway says: {exc}") from None
    except (OSError, ConnectionClosed) as exc:
        raise fail(f"cannot talk to the gateway at {to}: {exc}") from None
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            out.print()
