"""One entry of a partition through its handler: check, drop duplicates, retry, dead-letter,
acknowledge.

Before the handler runs, one script checks the partition's fence, drops a duplicate, and
marks the entry as in hand. An entry found in hand by a consumer that is gone was being
handled when that consumer died: that counts as a failed attempt. Entries that only
waited in a queue are never charged, and a handler that makes progress (checkpoints its
state, with a publish or on its own) has its earlier crashes forgiven, so a long reply
killed twice is not taken for poison; one that publishes the same first message each time
and then dies is. After MARIONETTE_MAX_DELIVERIES attempts the entry goes to dead letters.

The acknowledgement, the duplicate mark, the stage's changed state and the entries the
handler released all go in one fenced write after the handler returned; the handler's
publishes are awaited inside it, each its own fenced write carrying the state as it was
when published. So whatever is acknowledged has had its full effect, and whatever state
is stored matches what was published.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from faststream.redis.message import DefaultStreamMessage
from pydantic import BaseModel
from redis.asyncio import Redis

from contracts.envelope import Envelope
from contracts.topics import Topic
from services.bus.causes import Cause, current_cause
from services.bus.dead_letters import DLQ_MAXLEN, dead_letter_fields, dead_letter_stream
from services.bus.fencing import Fence, Fenced, Writes, begin_entry, run_writes
from services.bus.partitions import session_tag
from services.bus.recovery import (
    REDIS_UNAVAILABLE,
    TRANSIENT_ERRORS,
    Backoff,
    raise_if_cancelling,
)
from services.bus.settings import BusSettings
from services.bus.switches import StageSwitch
from services.bus.tracing import handled_envelope
from services.bus.wire import MalformedMessage, StreamEntry, decode_entry

log = logging.getLogger("marionette.bus")

Outcome = Literal["handled", "held", "duplicate", "stale", "muted", "dead_letter", "dropped"]


@dataclass
class ConsumerStats:
    """Counters of one topic consumer; metrics read these."""

    handled: int = 0
    held: int = 0
    duplicates: int = 0
    stale: int = 0
    muted: int = 0  # its stage switched off (services.bus.switches)
    dead_letters: int = 0
    retries: int = 0
    dropped: int = 0
    claimed: int = 0

    def count(self, outcome: Outcome) -> None:
        name = {"duplicate": "duplicates", "dead_letter": "dead_letters"}.get(outcome, outcome)
        setattr(self, name, getattr(self, name) + 1)


@dataclass
class Delivery:
    """The entry a handler is handling, and the writes that go with its next fenced write."""

    entry: StreamEntry
    envelope: Envelope
    fence: Fence
    keys: "EntryKeys"
    state_ttl_s: int
    pending: Writes = field(default_factory=Writes)  # acknowledgements of released entries
    state: dict[str, BaseModel | None] = field(default_factory=dict)  # changed; None: deleted
    touched: set[str] = field(default_factory=set)  # state keys read or changed
    held: bool = False
    # The partition's held entries per session (shared with the reader), and what a
    # failed handler must put back there.
    held_by_session: dict[str, list["Held"]] = field(default_factory=dict)
    rollback: dict[str, list["Held"]] = field(default_factory=dict)
    mark: Callable[[Writes, Envelope], Writes] | None = None
    closed: bool = False
    timeout: asyncio.Timeout | None = None
    timeout_s: float = 0.0

    def take_pending(self, *, progress: bool) -> Writes:
        """The writes waiting for the next fenced write (and, when it publishes or
        checkpoints its state, the forgiving of this entry's crashes: it made progress)."""
        writes, self.pending = self.pending, Writes()
        checkpointed = bool(self.state)
        for key, value in self.state.items():
            if value is None:
                writes.delete(key)
            else:
                writes.set(key, value.model_dump_json(), self.state_ttl_s)
        self.state = {}
        if progress and self.timeout is not None:
            self.timeout.reschedule(asyncio.get_running_loop().time() + self.timeout_s)
        # Only a checkpoint is progress: a handler that publishes the same first message each
        # time and then kills its consumer is poison all the same.
        if progress and checkpointed and not self.closed:
            writes.done(self.keys.in_hand, self.keys.crashes, self.entry.entry_id,
                        self.fence.token, finished=False)  # fmt: skip
        return writes

    def release(self, session_id: str, keep_last: int) -> None:
        """Acknowledge the session's held entries but the keep_last latest (this one counts
        when it is held), with the next fenced write."""
        assert self.mark is not None
        queue = self.held_by_session.get(session_id, [])
        self.rollback.setdefault(session_id, list(queue))
        mine = self.held and self.envelope.session_id == session_id
        items = [*queue, Held(self.entry, self.envelope)] if mine else list(queue)
        count = max(0, len(items) - keep_last)
        for held in items[:count]:
            if held.entry is self.entry:
                self.held = False  # acknowledged with the others, after the handler
            else:
                self.mark(self.pending, held.envelope).xack(
                    held.entry.stream, self.keys.group, held.entry.entry_id
                )
        self.held_by_session[session_id] = [h for h in items[count:] if h.entry is not self.entry]

    def undo_release(self) -> None:
        self.held_by_session.update(self.rollback)
        self.rollback = {}


@dataclass(frozen=True)
class Held:
    """An entry handled but not yet acknowledged (Bus.hold)."""

    entry: StreamEntry
    envelope: Envelope


current_delivery: ContextVar[Delivery | None] = ContextVar("marionette_delivery", default=None)
"""Set while a partitioned handler runs (and in the tasks it starts)."""


@dataclass(frozen=True)
class EntryKeys:
    """The bookkeeping keys of one consumed stream."""

    group: str
    in_hand: str
    crashes: str

    @classmethod
    def of(cls, group: str, stream: str) -> "EntryKeys":
        base = f"marionette:{group}:{stream}"
        return cls(group, in_hand=f"{base}:in-hand", crashes=f"{base}:crashes")


class EntryProcessor:
    """Runs entries of one topic through one FastStream subscriber."""

    def __init__(
        self,
        *,
        client: Redis,
        topic: Topic[Any],
        group: str,
        consumer: str,
        subscriber: Any,
        settings: BusSettings,
        stale: Callable[[Envelope], bool] | None = None,
        forget: Callable[[set[str]], None] = lambda keys: None,
        switch: StageSwitch | None = None,
    ) -> None:
        """stale: says which messages are no longer wanted (an interrupted turn's);
        forget: drops cached state a failed handler may have changed half-way;
        switch: the stage's switches (muted while off) and the turns it has in progress."""
        self.client = client
        self.topic = topic
        self.group = group
        self.consumer = consumer
        self.subscriber = subscriber
        self.settings = settings
        self.stale = stale
        self.forget = forget
        self.switch = switch
        self.stats = ConsumerStats()

    # --- keys -------------------------------------------------------------------------

    def dedup_key(self, envelope: Envelope) -> tuple[str, str | None]:
        """(key, mark field): ordered topics keep a high-water mark per session and origin;
        unordered ones each handled message id."""
        base = f"marionette:seen:{self.group}:{self.topic.name}"
        if self.topic.ordered:
            tag = session_tag(envelope.session_id, self.settings.partitions)
            return f"{base}:{tag}:{envelope.session_id}", envelope.origin
        return f"{base}:{envelope.session_id}:{envelope.message_id}", None

    def mark(self, writes: Writes, envelope: Envelope) -> Writes:
        key, field_name = self.dedup_key(envelope)
        if field_name is None:
            return writes.seen(key, self.settings.dedup_ttl_s)
        return writes.mark(key, field_name, envelope.seq, self.settings.dedup_ttl_s)

    # --- one entry --------------------------------------------------------------------

    async def process(
        self, entry: StreamEntry, fence: Fence, held: dict[str, list[Held]] | None = None
    ) -> Outcome:
        """Handle one entry. Raises Fenced when the partition is no longer ours, and
        a Redis connection error when Redis is away (then call again with the same entry).
        held: the partition's entries handled but not acknowledged, per session."""
        outcome = await self._process(entry, fence, {} if held is None else held)
        self.stats.count(outcome)
        return outcome

    async def _process(
        self, entry: StreamEntry, fence: Fence, held: dict[str, list[Held]]
    ) -> Outcome:
        try:
            envelope = decode_entry(entry, self.topic, self.settings.max_message_bytes).envelope
        except MalformedMessage as exc:
            await self.dead_letter(entry, str(exc), entry.delivery_count, fence)
            return "dead_letter"
        keys = EntryKeys.of(self.group, entry.stream)

        if self.stale is not None and self.stale(envelope) and not entry.redriven:
            await self._write(fence, self.mark(Writes(), envelope).xack(
                entry.stream, self.group, entry.entry_id))  # fmt: skip
            return "stale"
        if self.switch is not None and self.switch.off:
            await self._write(fence, self.mark(Writes(), envelope).xack(
                entry.stream, self.group, entry.entry_id))  # fmt: skip
            return "muted"

        dedup_key, mark_field = self.dedup_key(envelope)
        crashes = await begin_entry(
            self.client, fence, dedup_key=dedup_key, mark_field=mark_field, seq=envelope.seq,
            check_duplicate=not entry.redriven, in_hand_key=keys.in_hand,
            crashes_key=keys.crashes, entry_id=entry.entry_id, ttl_s=self.settings.dedup_ttl_s,
        )  # fmt: skip
        if crashes is None:
            await self._write(fence, Writes().xack(entry.stream, self.group, entry.entry_id))
            return "duplicate"
        attempt = crashes + 1
        if attempt > self.settings.max_deliveries:
            reason = (
                f"its consumer died or stalled while handling it {crashes} times "
                f"(MARIONETTE_MAX_DELIVERIES={self.settings.max_deliveries})"
            )
            await self.dead_letter(entry, reason, crashes, fence, keys)
            return "dead_letter"

        if self.switch is not None:
            self.switch.turns.started(envelope)
        while True:
            delivery = Delivery(
                entry, envelope, fence, keys, self.settings.dedup_ttl_s,
                held_by_session=held, mark=self.mark,
            )  # fmt: skip
            try:
                await self._run_handler(delivery)
                if self.switch is not None:
                    self.switch.turns.finished(envelope)
                break
            except (asyncio.CancelledError, Fenced, *REDIS_UNAVAILABLE):
                # Not the message's fault: the reader tries the same entry again (or stops).
                self.forget(delivery.touched)
                delivery.undo_release()
                raise
            except Exception as exc:
                self.forget(delivery.touched)
                delivery.undo_release()
                if isinstance(exc, TimeoutError):
                    why = f"no progress for MARIONETTE_HANDLER_TIMEOUT_S={delivery.timeout_s:g} s"
                else:
                    why = f"{type(exc).__name__}: {exc}"
                if attempt >= self.settings.max_deliveries:
                    reason = f"handler failed on attempt {attempt} of " \
                             f"{self.settings.max_deliveries}: {why}"  # fmt: skip
                    await self.dead_letter(entry, reason, attempt, fence, keys)
                    return "dead_letter"
                self.stats.retries += 1
                delay_s = self.settings.retry_backoff_ms / 1000 * 2 ** (attempt - 1)
                log.warning(
                    "%s: %s failed on attempt %d (%s); retrying in %.2f s",
                    self.group, self.topic.name, attempt, why, delay_s,
                )  # fmt: skip
                attempt += 1
                await asyncio.sleep(delay_s)

        writes = delivery.take_pending(progress=False)
        delivery.closed = True
        if delivery.held:
            writes.done(keys.in_hand, keys.crashes, entry.entry_id, fence.token, finished=True)
            await self._write(fence, writes)
            held.setdefault(envelope.session_id, []).append(Held(entry, envelope))
            return "held"
        self.mark(writes, envelope).xack(entry.stream, self.group, entry.entry_id)
        writes.done(keys.in_hand, keys.crashes, entry.entry_id, fence.token, finished=True)
        await self._write(fence, writes)
        return "handled"

    async def _run_handler(self, delivery: Delivery) -> None:
        entry = delivery.entry
        cause = Cause(entry.stream, entry.entry_id.decode(), entry.read_at)
        delivery.timeout_s = self.settings.handler_timeout_s
        with _bound(delivery, cause):
            async with asyncio.timeout(delivery.timeout_s) as timeout:
                delivery.timeout = timeout
                await self.subscriber.process_message(
                    DefaultStreamMessage(
                        type="stream",
                        channel=entry.stream,
                        message_ids=[entry.entry_id],
                        data=entry.fields,
                    )
                )

    # --- writes -----------------------------------------------------------------------

    async def dead_letter(
        self,
        entry: StreamEntry,
        reason: str,
        delivery_count: int,
        fence: Fence,
        keys: EntryKeys | None = None,
    ) -> None:
        log.error(
            "%s: %s entry %s -> dead letters: %s",
            self.group, entry.stream, entry.entry_id.decode(), reason,
        )  # fmt: skip
        fields = dead_letter_fields(
            entry,
            topic_name=self.topic.name,
            reason=reason,
            delivery_count=delivery_count,
            group=self.group,
            consumer=self.consumer,
        )
        writes = Writes().xadd(dead_letter_stream(self.topic.name), DLQ_MAXLEN, fields)
        writes.xack(entry.stream, self.group, entry.entry_id)
        if keys is not None:
            writes.done(keys.in_hand, keys.crashes, entry.entry_id, fence.token, finished=True)
        await self._write(fence, writes)

    async def drop(self, entry: StreamEntry, fence: Fence) -> None:
        """Acknowledge without handling: the overflow policy chose to lose this entry."""
        await self._write(fence, Writes().xack(entry.stream, self.group, entry.entry_id))
        self.stats.count("dropped")

    async def _write(self, fence: Fence, writes: Writes) -> None:
        """A fenced write, retried through a Redis outage while the partition is ours.

        Never given up while it is: the handler has run, and running it again would repeat
        what it did in memory."""
        await write_while_owned(self.client, fence, writes)


async def write_while_owned(client: Redis, fence: Fence, writes: Writes) -> Any:
    backoff = Backoff(cap_s=0.2)
    while True:
        try:
            return await run_writes(client, fence, writes)
        except TRANSIENT_ERRORS:
            raise_if_cancelling()
            if not fence.held():
                raise Fenced(f"lost {fence.lease_key} while Redis was away") from None
            await backoff.wait()


@contextlib.contextmanager
def _bound(delivery: Delivery, cause: Cause) -> Iterator[None]:
    tokens = (
        current_delivery.set(delivery),
        current_cause.set(cause),
        handled_envelope.set(delivery.envelope),
    )
    try:
        yield
    finally:
        current_delivery.reset(tokens[0])
        current_cause.reset(tokens[1])
        handled_envelope.reset(tokens[2])
