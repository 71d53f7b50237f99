"""The chat queue of one session: what each arriving line becomes, and which line is
answered when. Pure functions of the book (queue, floor, recent lines) and the time, so
they are tested on tables of lines without a bus; the stage turns their Outcomes into
messages.

A line's score: 1, +3 when it mentions the character, +2 for a question, +4/+3/+2/+1 for
the best of broadcaster/moderator/vip/subscriber (or founder), +1 for each duplicate
merged into it (at most +5). The best is the highest score, the oldest among equals.
"""

import hashlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from contracts.arbiter import ArbiterAction, QueuedLine
from contracts.chat import ChatIncoming
from contracts.limits import MAX_QUEUE_SHOWN, MAX_REASON_CHARS
from services.arbiter.floor import Floor
from services.arbiter.lines import is_question, mentions, normalize, spam_reason
from services.arbiter.settings import ArbiterSettings

MENTION, QUESTION, MERGED, MERGED_MOST = 3.0, 2.0, 1.0, 5
BADGES: dict[str, float] = {
    "broadcaster": 4.0, "moderator": 3.0, "vip": 2.0, "subscriber": 1.0, "founder": 1.0,
}  # fmt: skip
DECIDED_KEPT = 1024  # ids of lines decided for good, so a redelivered one is not taken twice
HISTORY_KEPT = 300  # recent lines of every author (rate limits, repeats, moderation)
RECENT_FOR_MODERATION = 5
HISTORY_TEXT_CHARS = 300


class Waiting(BaseModel):
    """A line in the queue."""

    chat: ChatIncoming = Field(description="As it came on chat.incoming.")
    turn_id: str
    arrived_at: float
    key: str = Field(description="Its text as duplicates are compared (lines.normalize).")
    base: float = Field(description="Its score before duplicates.")
    why: list[str] = Field(default_factory=list)
    merged: int = 0
    traceparent: str = ""

    @property
    def score(self) -> float:
        return self.base + MERGED * min(self.merged, MERGED_MOST)

    def reasons(self) -> str:
        parts = list(self.why)
        if self.merged:
            parts.append(f"{self.merged + 1} asked the same")
        return ", ".join(parts) or "plain line"


class Said(BaseModel):
    """An author's recent line, whatever became of it."""

    author: str
    at: float
    key: str
    text: str


class Book(BaseModel):
    """What the arbiter keeps per session (checkpointed)."""

    queue: list[Waiting] = Field(default_factory=list)
    floor: Floor = Field(default_factory=Floor)
    history: list[Said] = Field(default_factory=list)
    decided: list[str] = Field(default_factory=list)

    def fork(self) -> "Book":
        """A copy to change, cheaply: the lines (frozen messages) and the recent lines are
        never changed in place, only the waiting lines' counts and the floor's holds."""
        return Book.model_construct(
            queue=[line.model_copy() for line in self.queue], floor=self.floor.fork(),
            history=list(self.history), decided=list(self.decided),
        )  # fmt: skip

    def knows(self, message_id: str) -> bool:
        return message_id in self.decided or any(
            w.chat.message_id == message_id for w in self.queue
        )

    def lines_within(self, author: str, now: float, window_s: float) -> int:
        """How many lines the author wrote in the last window_s (for the rate limit)."""
        return sum(1 for s in self.history if s.author == author and now - s.at <= window_s)

    def recent_texts(self, author: str, now: float, window_s: float) -> list[str]:
        """The author's lines of the last window_s, oldest first (for moderation)."""
        said = [s.text for s in self.history if s.author == author and now - s.at <= window_s]
        return said[-RECENT_FOR_MODERATION:]


@dataclass(frozen=True)
class Outcome:
    """One decision, with the queue as it stood right after it."""

    action: ArbiterAction
    line: Waiting
    seen_as: QueuedLine  # the line as the decision shows it (its wait, its count)
    reason: str
    shown: list[QueuedLine]
    queue_length: int
    refusal: tuple[str, ...] = ()  # moderation's reasons, when it refused the line
    excerpt: str = ""
    refused: Literal["text", "author"] = "text"  # what moderation refused: the line or its author


def author_key(chat: ChatIncoming) -> str:
    return f"{chat.platform}:{chat.author_id or chat.author.lower()}"


def turn_of(chat: ChatIncoming) -> str:
    """The turn the line becomes: its own, else one made from its id (the same each time)."""
    if chat.turn_id:
        return chat.turn_id
    return "chat-" + hashlib.sha1(chat.message_id.encode()).hexdigest()[:20]


def score_line(chat: ChatIncoming, names: list[str]) -> tuple[float, list[str]]:
    score, why = 1.0, list[str]()
    if chat.mentions_character or mentions(chat.text, names):
        score, why = score + MENTION, [*why, "mentions the character"]
    if is_question(chat.text):
        score, why = score + QUESTION, [*why, "question"]
    roles = {badge.split("/")[0].lower() for badge in chat.badges}
    best = max(roles & BADGES.keys(), key=BADGES.__getitem__, default=None)
    if best is not None:
        score, why = score + BADGES[best], [*why, best]
    return score, why


def ranked(queue: list[Waiting]) -> list[Waiting]:
    return sorted(queue, key=lambda w: (-w.score, w.arrived_at))


def as_queued(line: Waiting, now: float) -> QueuedLine:
    chat = line.chat
    return QueuedLine(
        message_id=chat.message_id, turn_id=line.turn_id, platform=chat.platform,
        author=chat.author, text=chat.text, badges=chat.badges, score=line.score,
        waited_ms=max(0, round((now - line.arrived_at) * 1000)), merged=line.merged,
    )  # fmt: skip


def _outcome(book: Book, action: ArbiterAction, line: Waiting, reason: str, now: float,
             **extra: object) -> Outcome:  # fmt: skip
    shown = [as_queued(w, now) for w in ranked(book.queue)[:MAX_QUEUE_SHOWN]]
    return Outcome(action, line, as_queued(line, now), reason[:MAX_REASON_CHARS], shown,
                   len(book.queue), **extra)  # type: ignore[arg-type]  # fmt: skip


def _decided(book: Book, line: Waiting) -> None:
    book.decided.append(line.chat.message_id)
    del book.decided[:-DECIDED_KEPT]


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


# --- a line arrives ---------------------------------------------------------------------------


def waiting_line(chat: ChatIncoming, now: float, settings: ArbiterSettings,
                 traceparent: str = "") -> Waiting:  # fmt: skip
    base, why = score_line(chat, settings.names)
    return Waiting(
        chat=chat, turn_id=turn_of(chat), arrived_at=now, key=normalize(chat.text, chat.emotes),
        base=base, why=why, traceparent=traceparent,
    )  # fmt: skip


def arrive(
    book: Book,
    line: Waiting,
    now: float,
    settings: ArbiterSettings,
    refusal: tuple[tuple[str, ...], str] | None = None,
    refused: Literal["text", "author"] = "text",
) -> list[Outcome]:
    """A new line: dropped (moderation's `refusal` (reasons, excerpt), rate limit, spam),
    merged into the same line waiting, or queued (the lowest dropped if the queue is full).
    A line already known (delivered again after a crash) gives nothing."""
    chat = line.chat
    if book.knows(chat.message_id):
        return []
    author = author_key(chat)
    window = settings.rate_limit_window_s
    earlier = [s for s in book.history if s.author == author and now - s.at <= window]
    book.history.append(Said(author=author, at=now, key=line.key,
                             text=chat.text[:HISTORY_TEXT_CHARS]))  # fmt: skip
    keep = max(settings.rate_limit_window_s, settings.stale_s)
    book.history = [s for s in book.history if now - s.at <= keep][-HISTORY_KEPT:]

    def drop(reason: str, **extra: object) -> list[Outcome]:
        _decided(book, line)
        return [_outcome(book, "dropped", line, reason, now, **extra)]

    if refusal is not None:
        reasons, excerpt = refusal
        return drop(
            f"moderation: {'; '.join(reasons)}", refusal=reasons, excerpt=excerpt, refused=refused
        )
    if len(earlier) >= settings.rate_limit_lines:
        return drop(f"rate limited: {chat.author} wrote {len(earlier) + 1} lines in "
                    f"{_seconds(window)} (at most {settings.rate_limit_lines})")  # fmt: skip
    spam = spam_reason(chat.text, chat.emotes)
    if spam is not None:
        return drop(f"spam: {spam}")
    if any(s.key == line.key for s in earlier):
        return drop(f"spam: {chat.author} said this already")
    same = next((w for w in book.queue if w.key == line.key), None)
    if same is not None:
        same.merged += 1
        _decided(book, line)
        reason = f"same as {same.chat.author}'s line, now {same.merged + 1} asking"
        return [_outcome(book, "merged", line, reason, now)]
    book.queue.append(line)
    outcomes = [_outcome(book, "queued", line, line.reasons(), now)]
    if len(book.queue) > settings.max_queue:
        lowest = ranked(book.queue)[-1]
        book.queue.remove(lowest)
        _decided(book, lowest)
        reason = f"queue full: the lowest of {settings.max_queue + 1} lines"
        outcomes.append(_outcome(book, "dropped", lowest, reason, now))
    return outcomes


# --- time passes --------------------------------------------------------------------------


def release_due(book: Book, now: float, settings: ArbiterSettings) -> str | None:
    """Why the best line should go now, or None while it waits."""
    if not book.queue or book.floor.chat_in_flight:
        return None
    oldest = min(w.arrived_at for w in book.queue)
    floor = book.floor
    if not floor.busy:
        if now >= floor.free_since + settings.gather_s and now >= oldest + settings.gather_s:
            return "the floor is free"
        return None
    blocked_since = max(oldest, floor.chat_ended_at)
    if now - blocked_since >= settings.max_wait_s:
        waited = _seconds(now - blocked_since)
        return f"the floor stayed busy ({floor.why_busy()}) for {waited}: answered next"
    return None


def step(book: Book, now: float, settings: ArbiterSettings, *, hold: bool = False) -> list[Outcome]:
    """Drop stale lines, let go of turns that never ended, and release the best line when
    it is due (not while `hold`: the arbiter is switched off)."""
    outcomes = []
    for line in [w for w in book.queue if now - w.arrived_at > settings.stale_s]:
        book.queue.remove(line)
        _decided(book, line)
        reason = f"stale: waited {_seconds(now - line.arrived_at)} (at most {settings.stale_s:g} s)"
        outcomes.append(_outcome(book, "dropped", line, reason, now))
    book.floor.expire(now, settings.turn_timeout_s, settings.transcript_wait_s)
    why = None if hold else release_due(book, now, settings)
    if why is not None:
        best = ranked(book.queue)[0]
        rivals = len(book.queue) - 1
        book.queue.remove(best)
        _decided(book, best)
        book.floor.opened(best.turn_id, now, chat=True)
        reason = f"{best.reasons()}; best of {rivals + 1}; {why}" if rivals else \
            f"{best.reasons()}; {why}"  # fmt: skip
        outcomes.append(_outcome(book, "chosen", best, reason, now))
    return outcomes


def turn_away(book: Book, line: Waiting, now: float, reason: str) -> list[Outcome]:
    """Drop a new line unseen (the arbiter is off); a line already known gives nothing."""
    if book.knows(line.chat.message_id):
        return []
    _decided(book, line)
    return [_outcome(book, "dropped", line, reason, now)]


def drop_all(book: Book, now: float, reason: str) -> list[Outcome]:
    """Empty the queue (panic, the arbiter switched off)."""
    outcomes = []
    for line in ranked(book.queue):
        book.queue.remove(line)
        _decided(book, line)
        outcomes.append(_outcome(book, "dropped", line, reason, now))
    return outcomes


def next_due(book: Book, settings: ArbiterSettings, *, hold: bool = False) -> float | None:
    """When step() may next do something without a new message (None: nothing waits);
    `hold`: nothing is released (the arbiter is off), only stale lines and turns expire."""
    times = []
    deadline = book.floor.next_deadline(settings.turn_timeout_s, settings.transcript_wait_s)
    if deadline is not None:
        times.append(deadline)
    if book.queue:
        oldest = min(w.arrived_at for w in book.queue)
        times.append(oldest + settings.stale_s + 0.001)
        floor = book.floor
        if not floor.chat_in_flight and not hold:
            if floor.busy:
                times.append(max(oldest, floor.chat_ended_at) + settings.max_wait_s)
            else:
                times.append(max(floor.free_since, oldest) + settings.gather_s)
    return min(times, default=None)
