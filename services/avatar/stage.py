"""avatar: tts.chunk in; avatar.expr out (expression, mouth track), plus blinks and idle.

An interrupt closes the mouth at once: an idle expression for the turn with a sequence
number above any chunk's, so a consumer that keeps the latest per turn ends there.
"""

import asyncio
import logging
import random
import time

from contracts import AvatarExpr, Control, TtsChunk
from contracts.topics import AVATAR_EXPR, CONTROL, TTS_CHUNK
from services.avatar.mouth import mouth_track
from services.avatar.settings import AvatarSettings
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.service_slot import ServiceSlot
from services.bus.settings import load_settings

log = logging.getLogger("marionette.avatar")

stage = Stage("avatar")
expressions_out = stage.publisher(AVATAR_EXPR)

INTERRUPTED_SEQ = 1_000_000
"""Above any chunk's 2 * index + 1: nothing of an interrupted turn comes after it."""


class AvatarService:
    def __init__(self, settings: AvatarSettings) -> None:
        self.settings = settings
        self.expression: dict[str, str] = {}  # per session: the current expression
        self.offset_s: dict[tuple[str, str], float] = {}  # per turn: audio so far
        self.last_seen: dict[str, float] = {}
        self.blink_seq: dict[str, int] = {}
        # Blinks count from 0 in each avatar process; a turn id of their own per process
        # keeps a restarted avatar's blinks from looking like repeats of the last run's.
        self.blink_turn = f"blink-{round(time.time() * 1000)}"

    async def handle(self, chunk: TtsChunk) -> None:
        session, turn = chunk.session_id, chunk.turn_id or ""
        self.last_seen[session] = time.monotonic()
        if chunk.expressions:
            self.expression[session] = chunk.expressions[0]
        expression = self.expression.get(session, "neutral")
        offset = self.offset_s.get((session, turn), 0.0)
        if chunk.pcm:
            track = mouth_track(
                chunk.pcm, chunk.sample_rate, chunk.alignments, fps=self.settings.fps,
                silence_db=self.settings.silence_db, smoothing=self.settings.smoothing,
            )  # fmt: skip
            await expressions_out.publish(
                AvatarExpr(
                    session_id=session, turn_id=turn, seq=chunk.index * 2,
                    expression=expression, fps=self.settings.fps, mouth_open=track,
                    offset_s=offset, state="speaking",
                )
            )  # fmt: skip
        self.offset_s[(session, turn)] = offset + chunk.duration_s
        if chunk.final:
            del self.offset_s[(session, turn)]
            # The reply is over: mouth shut, back to idle.
            await expressions_out.publish(
                AvatarExpr(
                    session_id=session, turn_id=turn, seq=chunk.index * 2 + 1,
                    expression=expression, fps=self.settings.fps,
                    offset_s=offset + chunk.duration_s, state="idle",
                )
            )  # fmt: skip

    async def interrupt(self, session: str, turn: str) -> None:
        if self.offset_s.pop((session, turn), None) is None:
            return  # not speaking this turn: the mouth is shut already
        await expressions_out.publish(
            AvatarExpr(
                session_id=session, turn_id=turn, seq=INTERRUPTED_SEQ,
                expression=self.expression.get(session, "neutral"), fps=self.settings.fps,
                state="idle",
            )
        )  # fmt: skip

    async def blink_forever(self) -> None:
        """Blinks for every session seen in the last minute, at irregular intervals."""
        while True:
            await asyncio.sleep(random.uniform(0.5, 1.5) * self.settings.blink_every_s)
            now = time.monotonic()
            for session, seen in list(self.last_seen.items()):
                if now - seen > 60:
                    del self.last_seen[session]
                    continue
                seq = self.blink_seq.get(session, 0)
                self.blink_seq[session] = seq + 1
                await expressions_out.publish(
                    AvatarExpr(
                        session_id=session, turn_id=self.blink_turn, seq=seq,
                        expression=self.expression.get(session, "neutral"),
                        fps=self.settings.fps, state="blink",
                    )
                )  # fmt: skip


async def build_service() -> AvatarService:
    return AvatarService(load_settings(AvatarSettings))


service = ServiceSlot(build_service)


@stage.consumer(TTS_CHUNK, drop_interrupted=True)
async def on_chunk(chunk: TtsChunk) -> None:
    await (await service.get()).handle(chunk)


@stage.consumer(CONTROL)
async def on_control(message: Control) -> None:
    interrupt = stage.interrupted.note(message)
    if interrupt is not None:
        await (await service.get()).interrupt(message.session_id, interrupt.target_turn_id)


async def main(bus: BusSettings, stop: asyncio.Event) -> None:
    """`marionette run avatar`: consume, and blink while running."""
    async with StageRuntime(stage, bus):
        blinking = asyncio.create_task((await service.get()).blink_forever())
        try:
            await stop.wait()
        finally:
            blinking.cancel()
