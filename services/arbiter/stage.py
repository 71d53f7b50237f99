"""arbiter: audience chat in (chat.incoming), the lines to answer out (chat.message), one at
a time, when the character is free, and every decision on arbiter.decision.

Each line is moderated (services.moderation; a refusal is published on `moderation`),
checked for spam and rate limits, merged with the same line waiting, or queued; the best
line is released when the floor frees (services.arbiter.floor: the person at the
microphone first), or after max_wait_s anyway. The choosing is services.arbiter.queue,
pure; this stage feeds it messages and the time, and publishes what it decided. The
operator's own inputs (the microphone, the panel's chat) do not pass through here: the
arbiter only watches them to know when the floor is busy.

The released chat.message keeps the line's session and turn (and its trace, carried in the
queue), and its id is `<turn>:0`; a decision's id is `<turn>.arbiter:0` (queued) or
`:1` (its final decision), a moderation verdict's `<turn>.moderation:0`. So whatever is
published twice is dropped downstream as a duplicate.

On a kill: the queue, the floor and the recent lines of each session are Checkpointed
state, stored with the last message a handler publishes (or checkpointed, when it
publishes nothing), under a per-session lock so two handlers never interleave. A
replacement loads them with the session's next message and carries on; a line in hand is
delivered again and recognised (queued or decided already). A release by the timer (a
gather window or max_wait_s passing, no message in hand) changes the state in memory
until the session's next handler stores it: killed in between, the replacement releases
the same line again, with the same ids, and downstream drops the copy. A session whose
queue waits while no message of it comes at all is picked up with its next message.

Switches: every handler is `while_off` (the floor must stay true while the arbiter is
off); while off, nothing is released, a new line is dropped with the reason, and panic (or
the arbiter switched off) drops the queue, each line with its decision.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts import (
    ArbiterDecision,
    AsrFinal,
    AsrPartial,
    ChatIncoming,
    ChatMessage,
    Control,
    Interrupt,
    ModerationVerdict,
    ModuleToggle,
    Panic,
    PlaybackProgress,
    PolicyToken,
    SpeechEvent,
)
from contracts.limits import MAX_REASON_CHARS
from contracts.topics import (
    ARBITER_DECISION,
    ASR_FINAL,
    ASR_PARTIAL,
    ASR_SPEECH,
    CHAT_INCOMING,
    CHAT_MESSAGE,
    CONTROL,
    MODERATION,
    PLAYBACK_PROGRESS,
    POLICY_TOKEN,
)
from services.arbiter.queue import (
    Book,
    Outcome,
    arrive,
    author_key,
    drop_all,
    next_due,
    step,
    turn_away,
    waiting_line,
)
from services.arbiter.settings import ArbiterSettings, load_arbiter_settings
from services.bus import Bus, Checkpointed, Publishes, Stage, consumes
from services.bus.fencing import Fenced
from services.bus.stage import BACKGROUND_NICENESS
from services.moderation import Moderator

log = logging.getLogger("marionette.arbiter")

Change = Callable[[Book, float], list[Outcome]]
_PROPAGATOR = TraceContextTextMapPropagator()
IDLE_CHECK_S = 1.0  # the timer looks at least this often (a session may have been added)
MIN_WAIT_S = 0.02


@dataclass
class Served:
    """A session this replica serves: its lock, and when its queue next needs a look."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    due: float | None = None


class ArbiterStage(Stage):
    name = "arbiter"
    niceness = BACKGROUND_NICENESS  # not in a turn's path: see Stage.niceness
    decisions = Publishes(ARBITER_DECISION)
    chosen = Publishes(CHAT_MESSAGE)
    verdicts = Publishes(MODERATION)
    books = Checkpointed(Book)

    def __init__(
        self, settings: ArbiterSettings, bus: Bus, *, clock: Callable[[], float] = time.time
    ) -> None:
        """clock: wall time (unix s), which the queue's times are in; it outlives a replica."""
        super().__init__(bus)
        self.settings = settings
        self.moderator = Moderator(settings.rules_dir)
        self.clock = clock
        self._served = bus.memory(lambda session: Served())  # emptied with a lost partition
        self._sessions: set[str] = set()  # those of them with something due, for the timer
        self._wake = asyncio.Event()
        self._panic = False

    @classmethod
    async def build(cls, bus: Bus) -> "ArbiterStage":
        return cls(load_arbiter_settings(), bus)

    # --- audience chat ----------------------------------------------------------------------

    @consumes(CHAT_INCOMING, while_off=True)
    async def on_line(self, chat: ChatIncoming) -> None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)  # the line's trace, for the chat.message released later
        settings = self.settings

        def change(book: Book, now: float) -> list[Outcome]:
            line = waiting_line(chat, now, settings, carrier.get("traceparent", ""))
            if self.bus.switched_off():
                why = self._off_reason()
                return [*drop_all(book, now, why), *turn_away(book, line, now, why)]
            author, window = author_key(chat), settings.rate_limit_window_s
            if book.lines_within(author, now, window) >= settings.rate_limit_lines:
                # Rate limited anyway: a flood is turned away before it costs moderation's
                # reading (a long line of junk takes a good part of a core for a moment).
                return arrive(book, line, now, settings)
            recent = book.recent_texts(author, now, window)
            verdict = self.moderator.check_input(
                chat.text, family_friendly=False, author=chat.author, recent=recent
            )
            if verdict.allowed:
                return arrive(book, line, now, settings)
            refusal = (verdict.reasons or ("refused",), verdict.excerpt)
            return arrive(book, line, now, settings, refusal, verdict.subject)

        await self._update(chat.session_id, change)

    def _off_reason(self) -> str:
        return "panic" if self._panic else "arbiter switched off (panic or its module toggle)"

    # --- the floor ----------------------------------------------------------------------------

    @consumes(ASR_SPEECH, while_off=True)
    async def on_speech(self, event: SpeechEvent) -> None:
        turn, state = event.turn_id or event.origin, event.state
        await self._update(event.session_id, _floor(lambda b, t: b.floor.speech(turn, state, t)))

    @consumes(ASR_PARTIAL, while_off=True)
    async def on_partial(self, partial: AsrPartial) -> None:
        turn = partial.turn_id or partial.origin
        await self._update(partial.session_id, _floor(lambda b, t: b.floor.heard(turn, t)))

    @consumes(ASR_FINAL, while_off=True)
    async def on_final(self, final: AsrFinal) -> None:
        turn = final.turn_id or final.origin
        await self._update(final.session_id, _floor(lambda b, t: b.floor.opened(turn, t)))

    @consumes(CHAT_MESSAGE, while_off=True)
    async def on_chat(self, chat: ChatMessage) -> None:
        """The operator's lines, and the ones released here (already holding the floor)."""
        turn = chat.turn_id or chat.origin
        await self._update(chat.session_id, _floor(lambda b, t: b.floor.opened(turn, t)))

    @consumes(POLICY_TOKEN, while_off=True)
    async def on_token(self, token: PolicyToken) -> None:
        turn = token.turn_id or token.origin
        if token.final:
            status, text = token.status or "ok", token.reply_text or ""
            change = _floor(lambda b, t: b.floor.replied(turn, status, text, t))
        else:
            change = _floor(lambda b, t: b.floor.token(turn, t))
        await self._update(token.session_id, change)

    @consumes(PLAYBACK_PROGRESS, while_off=True)
    async def on_progress(self, progress: PlaybackProgress) -> None:
        turn = progress.turn_id or progress.origin
        state, left = progress.state, progress.remaining_s
        change = _floor(lambda b, t: b.floor.progress(turn, state, left, t))
        await self._update(progress.session_id, change)

    # --- control: every replica reads it; each acts on the sessions it serves ---------------

    @consumes(CONTROL)
    async def on_control(self, message: Control) -> None:
        command = message.command
        if isinstance(command, Interrupt):
            turn = command.target_turn_id
            if self._served.get(message.session_id) is not None:
                change = _floor(lambda b, t: b.floor.end(turn, t))
                await self._update(message.session_id, change, in_handler=False)
        elif isinstance(command, Panic):
            self._panic = command.engaged
            if command.engaged:
                await self._drop_everywhere("panic")
        elif _turns_off(command, self.name):
            await self._drop_everywhere("arbiter switched off")

    async def _drop_everywhere(self, reason: str) -> None:
        for session in list(self._sessions):
            if self._served.get(session) is None:
                continue
            try:
                await self._update(session, lambda b, t: drop_all(b, t, reason), in_handler=False)
            except Fenced:
                self._forget(session)  # another replica serves it now

    # --- time ---------------------------------------------------------------------------------

    async def tick(self, session: str) -> None:
        """Let time act on a session's queue (stale lines, a gather window, max_wait_s)."""
        await self._update(session, lambda book, now: [], in_handler=False)

    async def background(self) -> None:
        """The timer: looks at each session when its queue is due."""
        while True:
            soonest = math.inf
            for session in list(self._sessions):
                served = self._served.get(session)
                if served is None:
                    self._sessions.discard(session)
                    continue
                if served.due is not None and served.due <= self.clock():
                    try:
                        await self.tick(session)
                    except Fenced:
                        self._forget(session)
                        continue
                    except Exception:
                        log.exception("%s: the arbiter's timer failed; trying again", session)
                        served.due = self.clock() + IDLE_CHECK_S
                    if served.due is not None and served.due <= self.clock():
                        served.due = self.clock() + MIN_WAIT_S  # never a busy loop
                if served.due is not None:
                    soonest = min(soonest, served.due)
            self._wake.clear()
            wait_s = min(IDLE_CHECK_S, max(MIN_WAIT_S, soonest - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    def _forget(self, session: str) -> None:
        self._served.pop(session)
        self._sessions.discard(session)

    # --- one change of a session's book -----------------------------------------------------

    async def _update(self, session: str, change: Change, *, in_handler: bool = True) -> None:
        """Under the session's lock: apply the change and let time act, then publish the
        outcomes with the book stored alongside the last of them."""
        served = self._served[session]
        async with served.lock:
            stored = await self.books.load(session)
            # A copy: the stored book stays as it was if anything below fails.
            book = stored.fork() if stored is not None else Book()
            now, off = self.clock(), self.bus.switched_off()
            outcomes = change(book, now)
            outcomes += step(book, now, self.settings, hold=off)
            # Without an outcome only the floor can have changed (queue and history change
            # with a decision).
            if outcomes or stored is None or book.floor != stored.floor:
                await self._commit(session, book, outcomes, now, in_handler)
            served.due = next_due(book, self.settings, hold=off)
        if served.due is None:  # nothing waits: the timer need not look (NPC sessions...)
            self._sessions.discard(session)
        else:
            self._sessions.add(session)
            self._wake.set()

    async def _commit(
        self, session: str, book: Book, outcomes: list[Outcome], now: float, in_handler: bool
    ) -> None:
        sends = [send for outcome in outcomes for send in self._messages(session, outcome, now)]
        # The state goes with the last publish: a kill before it leaves the old state, and
        # the message in hand is handled again, making the same messages (the same ids).
        for send in sends[:-1]:
            await send()
        self.books.save(session, "", book)
        if sends:
            await sends[-1]()
        elif in_handler:
            await self.bus.checkpoint()  # stored now, under the lock, not after it

    def _messages(self, session: str, outcome: Outcome, now: float) -> list[Callable[[], Any]]:
        line, turn = outcome.line, outcome.line.turn_id
        sends: list[Callable[[], Any]] = []
        if outcome.refusal:
            verdict = ModerationVerdict(
                session_id=session, turn_id=turn, message_id=f"{turn}.moderation:0", seq=0,
                direction="input", subject=outcome.refused, action="refused",
                reasons=[r[:MAX_REASON_CHARS] for r in outcome.refusal[:8]],
                excerpt=outcome.excerpt[:MAX_REASON_CHARS],
                judged_message_id=line.chat.message_id, judged_by=self.name,
            )  # fmt: skip
            sends.append(lambda: self.verdicts.publish(verdict))
        seq = 0 if outcome.action == "queued" else 1
        decision = ArbiterDecision(
            session_id=session, turn_id=turn, message_id=f"{turn}.arbiter:{seq}", seq=seq,
            action=outcome.action, line=outcome.seen_as, reason=outcome.reason,
            queue=outcome.shown, queue_length=outcome.queue_length,
        )  # fmt: skip
        sends.append(lambda: self.decisions.publish(decision))
        if outcome.action == "chosen":
            fields = line.chat.model_dump(exclude={"message_id", "created_at"})
            chosen = ChatMessage.model_validate(
                {**fields, "turn_id": turn, "message_id": f"{turn}:0", "seq": 0,
                 "read_aloud": self.settings.read_aloud}
            )  # fmt: skip
            sends.append(lambda: self._in_trace(line.traceparent, self.chosen.publish(chosen)))
        return sends

    @staticmethod
    async def _in_trace(traceparent: str, publishing: Any) -> None:
        """Publish inside the line's own trace (not the trace of what freed the floor)."""
        if not traceparent:
            await publishing
            return
        token = otel_context.attach(_PROPAGATOR.extract({"traceparent": traceparent}))
        try:
            await publishing
        finally:
            otel_context.detach(token)


def _turns_off(command: object, module: str) -> bool:
    return isinstance(command, ModuleToggle) and command.module == module and not command.enabled


def _floor(event: Callable[[Book, float], object]) -> Change:
    """A change that only tells the floor something."""

    def change(book: Book, now: float) -> list[Outcome]:
        event(book, now)
        return []

    return change
