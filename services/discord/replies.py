"""The character's answers in a Discord channel: where they go, how long, how often."""

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

ELLIPSIS = "…"
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?=\s|$)")


class AnsweredLine(BaseModel):
    """A turn that answers a Discord line: the reply goes there (checkpointed per turn, so
    a replacement replica still knows where the answer of a turn in progress goes)."""

    model_config = ConfigDict(frozen=True)

    channel_id: int
    message_id: int


def shorten_reply(text: str, limit: int) -> str:
    """At most `limit` characters: whole sentences when at least half the room holds them,
    else whole words and an ellipsis (a word longer than half the room is cut)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    window = text[: limit + 1]  # one more: is the character after the limit a space?
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= limit]
    if ends and ends[-1] >= limit // 2:
        return text[: ends[-1]]
    cut = text[: limit - len(ELLIPSIS) + 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    cut = cut[:space] if space >= limit // 2 else cut[:-1]
    return cut.rstrip(" \n,;:-") + ELLIPSIS


@dataclass
class _Bucket:
    tokens: float
    at: float


class ReplyPacer:
    """A token bucket per channel: `burst` replies at once, then one every `interval_s`
    (Discord allows about 5 messages per 5 s in a channel; discord.py waits out any 429
    on top of this, so the bucket only keeps the character from flooding a channel)."""

    def __init__(
        self, burst: int, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}

    def reserve(self, channel_id: int) -> float:
        """Take a slot for the channel; how long to wait before using it (s)."""
        if self.interval_s <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.setdefault(channel_id, _Bucket(float(self.burst), now))
        refill = (now - bucket.at) / self.interval_s
        bucket.tokens = min(float(self.burst), bucket.tokens + refill)
        bucket.at = now
        bucket.tokens -= 1  # below zero: slots promised to replies already waiting
        return 0.0 if bucket.tokens >= 0 else -bucket.tokens * self.interval_s

    async def wait(self, channel_id: int) -> None:
        delay = self.reserve(channel_id)
        if delay > 0:
            await asyncio.sleep(delay)
