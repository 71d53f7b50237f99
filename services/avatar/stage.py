"""avatar: tts.chunk in; avatar.expr out (expression, mouth track), plus blinks and idle.

Each chunk becomes one `speaking` expression with a mouth-open value per video frame, placed
in the turn's audio by offset_s; the turn's last chunk is followed by `idle` (mouth shut).
Where a turn's mouth is (its next chunk, its offset) and each session's expression are
checkpointed, so a replacement replica neither repeats nor skips a chunk.

An interrupt closes the mouth at once: an idle expression for the turn with a sequence
number above any chunk's, so a consumer that keeps the latest per turn ends there.
"""

import asyncio
import logging
import random
import time

from pydantic import BaseModel

from contracts import AvatarExpr, TtsChunk
from contracts.topics import AVATAR_EXPR, TTS_CHUNK
from services.avatar.mouth import mouth_track
from services.avatar.settings import AvatarSettings
from services.bus import Bus, Checkpointed, Publishes, Stage, consumes
from services.bus.fencing import Fenced
from services.bus.stage import BACKGROUND_NICENESS
from services.settings import load_settings

log = logging.getLogger("marionette.avatar")

INTERRUPTED_SEQ = 1_000_000
"""Above any chunk's 2 * index + 1: nothing of an interrupted turn comes after it."""


class TurnMouth(BaseModel):
    next_index: int = 0  # the next chunk to move the mouth for
    offset_s: float = 0.0  # where that chunk starts in the turn's audio
    moved: bool = False  # that chunk (the last) has its mouth track out: only idle is left


class Face(BaseModel):
    expression: str = "neutral"


class AvatarStage(Stage):
    name = "avatar"
    niceness = BACKGROUND_NICENESS  # not in a turn's path: see Stage.niceness
    interruptible = True
    expressions = Publishes(AVATAR_EXPR)
    mouths = Checkpointed(TurnMouth)
    faces = Checkpointed(Face)

    def __init__(self, settings: AvatarSettings, bus: Bus) -> None:
        super().__init__(bus)
        self.settings = settings
        self.last_seen: dict[str, float] = {}  # per session, for blinks
        self.blink_seq: dict[str, int] = {}
        # Blinks count from 0 in each avatar process: an origin of their own per process.
        self.blink_origin = f"blink-{bus.replica_id}-{round(time.time() * 1000)}"

    @classmethod
    async def build(cls, bus: Bus) -> "AvatarStage":
        return cls(load_settings(AvatarSettings), bus)

    @consumes(TTS_CHUNK)
    async def on_chunk(self, chunk: TtsChunk) -> None:
        session, turn = chunk.session_id, chunk.turn_id or ""
        self.last_seen[session] = time.monotonic()
        mouth = await self.mouths.load(session, turn) or TurnMouth()
        if chunk.index < mouth.next_index:
            return  # moved for before a crash
        face = await self.faces.load(session) or Face()
        if chunk.expressions and chunk.expressions[0] != face.expression:
            face = Face(expression=chunk.expressions[0])
            self.faces.save(session, "", face)
        offset = mouth.offset_s
        end = offset + chunk.duration_s
        # The turn's place goes with what is published for the chunk, so a replica that
        # takes over after a crash neither moves the mouth twice nor loses where it was.
        done = TurnMouth(next_index=chunk.index + 1, offset_s=end)
        if chunk.pcm and not mouth.moved:
            if chunk.final:  # its idle is still to come
                done = TurnMouth(next_index=chunk.index, offset_s=offset, moved=True)
            self.mouths.save(session, turn, done)
            track = mouth_track(
                chunk.pcm, chunk.sample_rate, chunk.alignments, fps=self.settings.fps,
                silence_db=self.settings.silence_db, smoothing=self.settings.smoothing,
            )  # fmt: skip
            await self.expressions.publish(
                AvatarExpr(
                    session_id=session, turn_id=turn, seq=chunk.index * 2,
                    expression=face.expression, fps=self.settings.fps, mouth_open=track,
                    offset_s=offset, state="speaking",
                )
            )  # fmt: skip
        elif not chunk.final:
            self.mouths.save(session, turn, done)
        if chunk.final:
            # The reply is over: mouth shut, back to idle.
            self.mouths.forget(session, turn)
            await self.expressions.publish(
                AvatarExpr(
                    session_id=session, turn_id=turn, seq=chunk.index * 2 + 1,
                    expression=face.expression, fps=self.settings.fps,
                    offset_s=end, state="idle",
                )
            )  # fmt: skip

    async def on_interrupt(self, session_id: str, turn_id: str) -> None:
        if await self.mouths.load(session_id, turn_id) is None:
            return  # not speaking this turn here: the mouth is shut already
        self.mouths.forget(session_id, turn_id)
        face = await self.faces.load(session_id) or Face()
        await self.expressions.publish(
            AvatarExpr(
                session_id=session_id, turn_id=turn_id, seq=INTERRUPTED_SEQ,
                expression=face.expression, fps=self.settings.fps, state="idle",
            )
        )  # fmt: skip

    async def background(self) -> None:
        """Blinks for every session seen in the last minute, at irregular intervals (none
        while the avatar is switched off: it moves nothing)."""
        while True:
            await asyncio.sleep(random.uniform(0.5, 1.5) * self.settings.blink_every_s)
            if self.bus.switched_off():
                continue
            now = time.monotonic()
            for session, seen in list(self.last_seen.items()):
                if now - seen > 60:
                    del self.last_seen[session]
                    continue
                seq = self.blink_seq.get(session, 0)
                self.blink_seq[session] = seq + 1
                face = await self.faces.load(session) or Face()
                try:
                    await self.expressions.publish(
                        AvatarExpr(
                            session_id=session, message_id=f"{self.blink_origin}:{seq}",
                            seq=seq, expression=face.expression, fps=self.settings.fps,
                            state="blink",
                        )
                    )  # fmt: skip
                except Fenced:
                    del self.last_seen[session]  # another replica has this session now
