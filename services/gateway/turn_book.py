"""The latest turns and their latency, kept up to date by watching the topics.

A gateway follows the topics that make a turn (what opened it, the reply, its speech, its
playback) and keeps a small table of the latest turns, so /api/status answers at once and
the panel can draw each turn's timings. It starts from the last few minutes of history.

voice_to_voice_ms follows docs/architecture.md: from the end of the user's speech
(asr.final's speech_end_at) to the first tts.chunk published. Chat turns have no speech:
their `first_audio_ms` counts from the chat line instead.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from pydantic import BaseModel

from contracts import AsrFinal, ChatMessage, PlaybackProgress, PolicyToken, TtsChunk
from contracts.topics import ASR_FINAL, CHAT_MESSAGE, PLAYBACK_PROGRESS, POLICY_TOKEN, TTS_CHUNK
from services.gateway.tail import StreamEvent, StreamTail

log = logging.getLogger("marionette.gateway")

HISTORY_S = 300
TOPICS = (ASR_FINAL, CHAT_MESSAGE, POLICY_TOKEN, TTS_CHUNK, PLAYBACK_PROGRESS)


class TurnSeen(BaseModel):
    session_id: str
    turn_id: str
    source: str  # "speech", a chat platform, or "say"/"reply" when only the reply was seen
    heard: str | None = None  # what the user said
    started_at: float  # when the turn's input was added to Redis (Unix s)
    speech_end_at: float | None = None
    first_token_at: float | None = None
    first_audio_at: float | None = None
    playing_at: float | None = None
    ended_at: float | None = None
    reply: str | None = None
    status: str | None = None  # the reply's; "interrupted" also when playback was flushed
    playback: str | None = None  # the last playback state

    def latency(self) -> dict[str, int | None]:
        def ms(start: float | None, end: float | None) -> int | None:
            return None if start is None or end is None else round((end - start) * 1000)

        return {
            "voice_to_voice_ms": ms(self.speech_end_at, self.first_audio_at),
            "first_token_ms": ms(self.started_at, self.first_token_at),
            "first_audio_ms": ms(self.started_at, self.first_audio_at),
            "first_played_ms": ms(self.started_at, self.playing_at),
        }

    def summary(self) -> dict[str, Any]:
        return {**self.model_dump(), **self.latency()}


class TurnBook:
    def __init__(self, tail: StreamTail, capacity: int = 100) -> None:
        self.tail = tail
        self.capacity = capacity
        self.turns: OrderedDict[tuple[str, str], TurnSeen] = OrderedDict()

    def latest(self, count: int) -> list[dict[str, Any]]:
        return [turn.summary() for turn in reversed(list(self.turns.values())[-count:])]

    async def run(self) -> None:
        """Follow the topics until cancelled (from HISTORY_S ago); Redis errors only pause it."""
        since = f"{int((time.time() - HISTORY_S) * 1000)}-0"
        while True:
            try:
                async for event in self.tail.follow(TOPICS, since=since):
                    since = event.position
                    self.note(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("turn book: %s", exc)
                await asyncio.sleep(1.0)

    def note(self, event: StreamEvent) -> None:
        message = event.message
        if message.turn_id is None:
            return
        at = event.order[0] / 1000
        key = (message.session_id, message.turn_id)
        turn = self.turns.get(key)
        if turn is None:
            source = "say" if key[1].startswith("gw-say-") else "reply"
            turn = TurnSeen(session_id=key[0], turn_id=key[1], source=source, started_at=at)
            self.turns[key] = turn
            while len(self.turns) > self.capacity:
                self.turns.popitem(last=False)
        if isinstance(message, AsrFinal):
            turn.source, turn.heard, turn.started_at = "speech", message.text, at
            turn.speech_end_at = message.speech_end_at
        elif isinstance(message, ChatMessage):
            turn.source, turn.heard, turn.started_at = message.platform, message.text, at
        elif isinstance(message, PolicyToken):
            if turn.first_token_at is None:
                turn.first_token_at = at
            if message.final:
                turn.reply, turn.status = message.reply_text, message.status
        elif isinstance(message, TtsChunk):
            if turn.first_audio_at is None:
                turn.first_audio_at = at
        elif isinstance(message, PlaybackProgress):
            turn.playback = message.state
            if message.state == "playing" and turn.playing_at is None:
                turn.playing_at = at
            if message.state in ("finished", "flushed"):
                turn.ended_at = at
            if message.state == "flushed":
                turn.status = "interrupted"
