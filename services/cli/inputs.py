"""Feeding the running character: `marionette capture` (audio), `chat`, and `devices`."""

import asyncio
import json
import time
import uuid
from typing import Annotated, cast

import typer
from rich.table import Table

from contracts import ChatMessage, PolicyToken
from contracts.topics import CHAT_MESSAGE, POLICY_TOKEN
from contracts.turns import reply_ended
from services.bus import Producer, StageRuntime
from services.bus.connect import bus_client
from services.bus.partitions import stream_for
from services.bus.runtime import RedisBus
from services.bus.settings import BusSettings
from services.bus.wire import StreamEntry, decode_entry
from services.capture.settings import CaptureSettings
from services.capture.sources import input_devices
from services.capture.stage import CaptureStage, open_source
from services.cli.common import bus_settings, console, existing_redis, fail, out
from services.errors import StageStartError
from services.logs import setup_logging
from services.settings import load_settings

Fields = dict[bytes, bytes]


def capture(
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="WAV/FLAC file, or - for raw PCM on stdin.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Microphone id or name.")] = None,
    fast: Annotated[bool, typer.Option(help="Read a file as fast as possible.")] = False,
    session: Annotated[str | None, typer.Option(help="Session id of the audio.")] = None,
) -> None:
    """Publish audio as audio.frame: a file, stdin, or the microphone."""
    setup_logging(console=console)
    bus = bus_settings()
    bus = bus.model_copy(update={"redis_url": existing_redis(bus)})
    overrides = {"input": input, "device": device, "session_id": session}
    try:
        settings = load_settings(
            CaptureSettings, **{k: v for k, v in overrides.items() if v is not None}
        )
        if fast:
            settings = settings.model_copy(update={"realtime": False})
        count = asyncio.run(_capture(bus, settings))
    except StageStartError as exc:
        raise fail(str(exc)) from None
    out.print(f"published {count} frames to session {settings.session_id}")


async def _capture(bus: BusSettings, settings: CaptureSettings) -> int:
    source = open_source(settings)

    async def build(stage_bus: RedisBus) -> CaptureStage:
        return CaptureStage(settings, source, stage_bus)

    runtime = StageRuntime(CaptureStage, bus, build=build)
    await runtime.run()
    return runtime.stage.frames_published


def devices(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """List audio input devices with their ids."""
    try:
        found = input_devices()
    except StageStartError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(found))
        return
    if not found:
        raise fail("no microphone found; read audio from a file instead: --input FILE")
    table = Table("id", "name", "channels", "rate", title="Input devices")
    for device in found:
        table.add_row(
            str(device["id"]), device["name"], str(device["channels"]), str(device["sample_rate"])
        )
    out.print(table)


def chat(
    text: Annotated[str, typer.Argument(help="What to say to the character.")],
    author: Annotated[str, typer.Option(help="Who says it.")] = "you",
    session: Annotated[str, typer.Option(help="The conversation.")] = "local",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the reply; 0: don't.")] = 60,
) -> None:
    """Say something to the running character in chat, and print its reply."""
    bus = bus_settings()
    bus = bus.model_copy(update={"redis_url": existing_redis(bus)})
    reply = send_chat(bus, text, author=author, session=session, wait_s=wait)
    if wait and reply is None:
        raise fail(f"no reply within {wait:g} s (is policy running? `marionette up`)")
    if reply is not None:
        out.print(f"[bold]{reply.reply_text}[/] ({reply.status})")


def send_chat(
    bus: BusSettings, text: str, *, author: str = "you", session: str = "local",
    wait_s: float = 0,
) -> PolicyToken | None:  # fmt: skip
    """Publish a chat line as the control panel would; with wait_s, the reply's final token."""
    turn = f"cli-{uuid.uuid4().hex[:12]}"
    message = ChatMessage(
        session_id=session, turn_id=turn, seq=0, platform="cli", author=author, text=text
    )

    async def go() -> PolicyToken | None:
        client = bus_client(bus)  # a cluster client on a Redis Cluster
        stream = stream_for(POLICY_TOKEN, session, bus.partitions)
        newest = cast(list[tuple[bytes, Fields]], await client.xrevrange(stream, count=1))
        start = newest[0][0] if newest else b"0-0"
        async with Producer(bus, "cli", [CHAT_MESSAGE]) as producer:
            await producer.publish(message)
        try:
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                reply = await client.xread({stream: start}, block=200, count=100)
                rows = cast(list[tuple[bytes, list[tuple[bytes, Fields]]]], reply or [])
                for _, entries in rows:
                    for entry_id, fields in entries:
                        start = entry_id
                        entry = StreamEntry(stream, entry_id, fields)
                        token = decode_entry(entry, POLICY_TOKEN, 1 << 30).envelope
                        if token.turn_id == turn and reply_ended(token):
                            return cast(PolicyToken, token)
            return None
        finally:
            await client.aclose()

    return asyncio.run(go())
