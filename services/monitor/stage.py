"""monitor: every topic in, a line per message out (audio frames counted per second).

What a line says about each kind of message is one table, FORMATS.
"""

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rich.console import Console

from contracts import (
    ALL_TOPICS,
    ArbiterDecision,
    AsrFinal,
    AsrPartial,
    AudioFrame,
    AvatarExpr,
    ChatIncoming,
    ChatMessage,
    Control,
    Envelope,
    ModerationVerdict,
    PlaybackProgress,
    PolicyToken,
    SpeechEvent,
    TtsChunk,
)
from contracts.tools import ToolEvent
from contracts.topics import Topic
from contracts.vision import VisionObservation
from services.bus import Stage, consumes
from services.bus.stage import BACKGROUND_NICENESS

console = Console(highlight=False)


def _token(m: PolicyToken) -> str:
    return f"final {m.status}: {m.reply_text!r}" if m.final else repr(m.text)


FORMATS: dict[type[Envelope], Callable[[Any], str]] = {
    SpeechEvent: lambda m: f"speech {m.state} at {m.at_s:.2f} s",
    AsrPartial: lambda m: f"… {m.text}",
    AsrFinal: lambda m: f"{m.text!r} ({m.language}, {m.confidence:.2f})",
    ChatMessage: lambda m: f"{m.platform}:{m.author}: {m.text}",
    ChatIncoming: lambda m: f"{m.platform}:{m.author}: {m.text}",
    PolicyToken: _token,
    TtsChunk: lambda m: f"#{m.index} {m.duration_s:.2f} s {m.text!r}",
    PlaybackProgress: lambda m: f"{m.state} chunk {m.chunk_index} at {m.played_s:.2f} s",
    AvatarExpr: lambda m: f"{m.state} {m.expression} {len(m.mouth_open)} frames",
    Control: lambda m: m.command.model_dump_json(),
    ArbiterDecision: lambda m: f"{m.action} {m.line.author}: {m.line.text!r} ({m.reason})",
    ModerationVerdict: lambda m: f"{m.direction} {m.subject} {m.action}: {'; '.join(m.reasons)}",
    ToolEvent: lambda m: (
        f"{m.tool}({m.arguments})" if m.phase == "call" else f"{m.tool}: {m.outcome} {m.result!r}"
    ),
    VisionObservation: lambda m: f"{m.source}: {m.description}",
}


class MonitorStage(Stage):
    name = "monitor"
    niceness = BACKGROUND_NICENESS  # not in a turn's path: see Stage.niceness

    def __init__(self, bus: Any) -> None:
        super().__init__(bus)
        self.frames: dict[str, int] = defaultdict(int)
        self.last_frame_report = time.monotonic()

    async def show(self, topic: Topic[Any], message: Envelope) -> None:
        if isinstance(message, AudioFrame):
            self._count_frame(message)
            return
        turn = message.turn_id or "-"
        detail = FORMATS[type(message)](message)
        console.print(
            f"[cyan]{topic.name:<12}[/] {message.session_id}/{turn} #{message.seq} {detail}"
        )

    def _count_frame(self, frame: AudioFrame) -> None:
        self.frames[frame.session_id] += 1
        if time.monotonic() - self.last_frame_report >= 1.0:
            for session, count in sorted(self.frames.items()):
                console.print(f"[cyan]{'audio.frame':<12}[/] {session} {count} frames")
            self.frames.clear()
            self.last_frame_report = time.monotonic()


def _handler(topic: Topic[Any]) -> Callable[[MonitorStage, Envelope], Any]:
    async def on_message(self: MonitorStage, message: Envelope) -> None:
        await self.show(topic, message)

    return consumes(topic)(on_message)


for _topic in ALL_TOPICS:  # a handler per topic, all alike
    setattr(MonitorStage, f"on_{_topic.name.replace('.', '_')}", _handler(_topic))
