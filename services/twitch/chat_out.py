"""What goes back into Twitch chat: answers shortened to fit, and a rate limit.

The limit is a sliding window (at most N messages in any window of W seconds), not a
refilling bucket: a bucket of N that refills N per W lets up to 2N through in one window
(a full bucket spent at once, then its refill), and Twitch counts per window. A message
over the limit is dropped with a log line rather than queued: a chat answer that arrives a
minute late answers a conversation that has moved on, and a queue would only grow while
the character talks faster than chat allows.
"""

import time
from collections import deque
from collections.abc import Callable

ELLIPSIS = "…"
SENTENCE_ENDS = ".!?…"


def shorten_for_chat(text: str, limit: int) -> str:
    """The text on one line, at most `limit` characters: whole sentences when those fill
    at least a third of it, else cut after a word with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    floor = limit // 3
    # A sentence ends at punctuation followed by a space (or by the end of the text).
    for end in range(limit, floor, -1):
        if flat[end - 1] in SENTENCE_ENDS and (end == len(flat) or flat[end] == " "):
            return flat[:end]
    room = flat[: limit - len(ELLIPSIS)]
    space = room.rfind(" ")
    if space >= floor:
        room = room[:space]
    return room.rstrip(" ,;:-") + ELLIPSIS


class ChatRateLimit:
    """At most `messages` sends in any `window_s` seconds."""

    def __init__(
        self, messages: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.messages = messages
        self.window_s = window_s
        self._clock = clock
        self._sent: deque[float] = deque()

    def try_send(self) -> bool:
        """Count one send now if the window has room; False (nothing counted) if not."""
        now = self._clock()
        while self._sent and now - self._sent[0] >= self.window_s:
            self._sent.popleft()
        if len(self._sent) >= self.messages:
            return False
        self._sent.append(now)
        return True

    def wait_s(self) -> float:
        """How long until the window has room again (0: it has now)."""
        now = self._clock()
        recent = [t for t in self._sent if now - t < self.window_s]
        if len(recent) < self.messages:
            return 0.0
        return recent[-self.messages] + self.window_s - now
