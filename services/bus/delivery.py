"""One entry through its handler: check, drop duplicates, retry, dead-letter, acknowledge.

An entry is acknowledged only after its handler returned, and the handler's publishes
are awaited inside it, so an acknowledged entry has had its full effect. The 'handled'
mark and the XACK go in one transaction.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from faststream.redis.message import DefaultStreamMessage
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from contracts.envelope import Envelope
from contracts.topics import Topic
from services.bus.causes import Cause, current_cause
from services.bus.dead_letters import DLQ_MAXLEN, dead_letter_fields, dead_letter_stream
from services.bus.dedup import Deduplicator
from services.bus.recovery import (
    REDIS_UNAVAILABLE,
    TRANSIENT_ERRORS,
    Backoff,
    raise_if_cancelling,
)
from services.bus.settings import BusSettings
from services.bus.tracing import handled_envelope
from services.bus.wire import MalformedMessage, StreamEntry, decode_entry

log = logging.getLogger("marionette.bus")

Outcome = Literal["handled", "duplicate", "stale", "dead_letter", "dropped", "abandoned"]


@dataclass
class ConsumerStats:
    """Counters of one topic consumer; metrics read these."""

    handled: int = 0
    duplicates: int = 0
    stale: int = 0
    dead_letters: int = 0
    retries: int = 0
    dropped: int = 0
    claimed: int = 0

    def count(self, outcome: Outcome) -> None:
        if outcome == "handled":
            self.handled += 1
        elif outcome == "duplicate":
            self.duplicates += 1
        elif outcome == "stale":
            self.stale += 1
        elif outcome == "dead_letter":
            self.dead_letters += 1
        elif outcome == "dropped":
            self.dropped += 1


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
        dedup: Deduplicator,
        settings: BusSettings,
        stale: Callable[[Envelope], bool] | None = None,
    ) -> None:
        """stale: says which messages are no longer wanted (an interrupted turn's)."""
        self.client = client
        self.topic = topic
        self.group = group
        self.consumer = consumer
        self.subscriber = subscriber
        self.dedup = dedup
        self.settings = settings
        self.stale = stale
        self.stats = ConsumerStats()
        self.in_flight: dict[tuple[str, bytes], float] = {}

    async def process(self, entry: StreamEntry) -> Outcome:
        """Handle one entry. Raises only when Redis is unreachable; then call again."""
        outcome = await self._process(entry)
        self.stats.count(outcome)
        return outcome

    async def _process(self, entry: StreamEntry) -> Outcome:
        try:
            decoded = decode_entry(entry, self.topic, self.settings.max_message_bytes)
        except MalformedMessage as exc:
            await self.dead_letter(entry, str(exc), entry.delivery_count)
            return "dead_letter"
        envelope = decoded.envelope

        if entry.delivery_count > self.settings.max_deliveries:
            await self.dead_letter(
                entry,
                f"delivered {entry.delivery_count} times without an acknowledgement "
                "(its consumer died or stalled on it each time)",
                entry.delivery_count,
            )
            return "dead_letter"

        if not entry.redriven and await self.dedup.is_duplicate(envelope):
            await self._commit(entry, None)
            return "duplicate"

        if self.stale is not None and self.stale(envelope):
            await self._commit(entry, envelope)
            return "stale"

        attempt = entry.delivery_count
        cause = Cause(entry.stream, entry.entry_id.decode(), entry.read_at)
        while True:
            self.in_flight[(entry.stream, entry.entry_id)] = time.monotonic()
            cause_token = current_cause.set(cause)
            envelope_token = handled_envelope.set(envelope)
            try:
                await self.subscriber.process_message(
                    DefaultStreamMessage(
                        type="stream",
                        channel=entry.stream,
                        message_ids=[entry.entry_id],
                        data=entry.fields,
                    )
                )
                break
            except (asyncio.CancelledError, *REDIS_UNAVAILABLE):
                # Redis being down is not the message's fault: the reader retries it as it is.
                raise
            except Exception as exc:
                if attempt >= self.settings.max_deliveries:
                    await self.dead_letter(
                        entry,
                        f"handler failed on attempt {attempt} of "
                        f"{self.settings.max_deliveries}: {type(exc).__name__}: {exc}",
                        attempt,
                    )
                    return "dead_letter"
                self.stats.retries += 1
                delay_s = self.settings.retry_backoff_ms / 1000 * 2 ** (attempt - 1)
                log.warning(
                    "%s: %s failed on attempt %d (%s: %s); retrying in %.2f s",
                    self.group, self.topic.name, attempt, type(exc).__name__, exc, delay_s,
                )  # fmt: skip
                attempt += 1
                await asyncio.sleep(delay_s)
            finally:
                current_cause.reset(cause_token)
                handled_envelope.reset(envelope_token)
                self.in_flight.pop((entry.stream, entry.entry_id), None)

        return "handled" if await self._commit(entry, envelope) else "abandoned"

    async def _commit(self, entry: StreamEntry, envelope: Envelope | None) -> bool:
        """Mark handled and acknowledge, retrying through a reconnect for a while."""

        def queue(pipe: Pipeline) -> None:
            if envelope is not None:
                self.dedup.mark_handled(pipe, envelope)
            pipe.xack(entry.stream, self.group, entry.entry_id)

        return await self._transaction(queue, f"acknowledge {entry.entry_id!r}")

    async def dead_letter(self, entry: StreamEntry, reason: str, delivery_count: int) -> None:
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

        def queue(pipe: Pipeline) -> None:
            pipe.xadd(dead_letter_stream(self.topic.name), fields, maxlen=DLQ_MAXLEN)  # type: ignore[arg-type]
            pipe.xack(entry.stream, self.group, entry.entry_id)

        await self._transaction(queue, "dead-letter")

    async def drop(self, entry: StreamEntry) -> None:
        """Acknowledge without handling: the overflow policy chose to lose this entry."""
        await self._transaction(
            lambda pipe: pipe.xack(entry.stream, self.group, entry.entry_id), "drop"
        )
        self.stats.count("dropped")

    async def _transaction(self, queue: Any, what: str, give_up_s: float = 30.0) -> bool:
        backoff = Backoff()
        deadline = time.monotonic() + give_up_s
        while True:
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    queue(pipe)
                    await pipe.execute()
                return True
            except TRANSIENT_ERRORS as exc:
                raise_if_cancelling()
                if time.monotonic() > deadline:
                    # Left pending: it is redelivered once Redis is back.
                    log.error("%s: could not %s for %.0f s: %s", self.group, what, give_up_s, exc)
                    return False
                await backoff.wait()

    async def keep_claimed(self) -> None:
        """Reset the idle time of long-running entries so no other replica claims them."""
        interval_s = self.settings.claim_idle_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            for (stream, entry_id), started in list(self.in_flight.items()):
                if now - started < interval_s:
                    continue
                try:
                    await self.client.xclaim(
                        stream, self.group, self.consumer, 0, [entry_id], justid=True
                    )
                except TRANSIENT_ERRORS:
                    break
