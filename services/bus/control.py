"""Following control (or any unordered topic) on every replica of a stage.

Every replica reads every entry (services.bus.readers.BroadcastReader), so an interrupt or
a pause reaches the replica that owns the turn. First the runtime's own rules: an Interrupt
marks its turn, whose late messages an interruptible stage never sees, and tells the stage
(on_interrupt); a ModuleToggle or Panic sets the switches (services.bus.switches). Then the
stage's own handler, if it has one, with retries and dead letters.

A starting replica reads back control_history_s of the stream. From that history it only
learns which turns were interrupted and how the switches stand, except what this stage has
not handled yet (newer than the stage's cursor: it came while every replica was down) and
what came while this replica was starting: those it handles in full.
"""

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.redis.message import DefaultStreamMessage
from redis.asyncio import Redis

from contracts import Control, Interrupt
from contracts.topics import Topic
from services.bus.dead_letters import DLQ_MAXLEN, dead_letter_fields, dead_letter_stream
from services.bus.delivery import ConsumerStats
from services.bus.fencing import Fenced
from services.bus.interrupts import InterruptedTurns
from services.bus.readers import BroadcastReader
from services.bus.settings import BusSettings
from services.bus.switches import StageSwitch
from services.bus.wire import MalformedMessage, StreamEntry, decode_entry, entry_order

log = logging.getLogger("marionette.bus")

RECENT = 4096
"""Message ids remembered, to drop one that was published twice."""


class ControlFollower:
    def __init__(
        self,
        *,
        client: Redis,
        topic: Topic[Any],
        subscriber: Any,
        group: str,
        replica_id: str,
        settings: BusSettings,
        interrupts: InterruptedTurns,
        on_interrupt: Callable[[str, str], Awaitable[None]] | None,
        switch: StageSwitch | None = None,
    ) -> None:
        """subscriber: the stage's handler of the topic, or None (the runtime only notes
        interrupts); on_interrupt: tells an interruptible stage; switch: applies module
        toggles and panic (services.bus.switches)."""
        self.client = client
        self.topic = topic
        self.subscriber = subscriber
        self.group = group
        self.replica_id = replica_id
        self.settings = settings
        self.interrupts = interrupts
        self.on_interrupt = on_interrupt
        self.switch = switch
        self.stats = ConsumerStats()
        self.cursor_key = f"marionette:cursor:{group}:{topic.name}"
        self._cursor = (0, 0)  # the last entry this stage handled, before we started
        self._started_at = (0, 0)
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.reader = BroadcastReader(
            client, topic.name, self._on_entry,
            history_ms=settings.control_history_s * 1000, block_ms=settings.block_ms,
            read_count=settings.read_count, name=f"{group}/{topic.name}",
        )  # fmt: skip

    async def run(self, started_at: tuple[int, int], caught_up: asyncio.Event) -> None:
        """started_at: Redis's clock when this replica began starting, as an entry id."""
        self._started_at = started_at
        raw = await _quiet(self.client.get(self.cursor_key))
        self._cursor = entry_order(raw) if raw else (0, 0)
        await self.reader.run(caught_up)

    def _fresh(self, entry: StreamEntry, replayed: bool) -> bool:
        order = entry_order(entry.entry_id)
        return not replayed or order >= self._started_at or order > self._cursor

    async def _on_entry(self, entry: StreamEntry, replayed: bool) -> None:
        try:
            message = decode_entry(entry, self.topic, self.settings.max_message_bytes).envelope
        except MalformedMessage as exc:
            if not replayed:
                await self._dead_letter(entry, str(exc), 1)
            return
        if message.message_id in self._recent:
            self.stats.count("duplicate")
            return
        self._recent[message.message_id] = None
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        fresh = self._fresh(entry, replayed)
        if isinstance(message, Control) and isinstance(message.command, Interrupt):
            turn = message.command.target_turn_id
            if not self.interrupts.covers_turn(message.session_id, turn):
                self.interrupts.add(message.session_id, turn)
                if fresh and self.on_interrupt is not None:
                    await self.on_interrupt(message.session_id, turn)
        if self.switch is not None and isinstance(message, Control):
            await self.switch.follow(message)  # newest wins, so the history is safe to apply
        if self.subscriber is None or not fresh:
            return  # an old one only tells which turns were interrupted
        await self._handle(entry)
        await _quiet(self.client.set(self.cursor_key, entry.entry_id, ex=self.settings.dedup_ttl_s))

    async def _handle(self, entry: StreamEntry) -> None:
        limit = self.settings.max_deliveries
        for attempt in range(1, limit + 1):
            try:
                await self.subscriber.process_message(
                    DefaultStreamMessage(
                        type="stream", channel=entry.stream,
                        message_ids=[entry.entry_id], data=entry.fields,
                    )
                )  # fmt: skip
                self.stats.count("handled")
                return
            except Fenced as exc:
                log.debug("%s: %s", self.group, exc)  # not this replica's session
                return
            except Exception as exc:
                if attempt == limit:
                    why = f"{type(exc).__name__}: {exc}"
                    reason = f"handler failed on attempt {attempt} of {limit}: {why}"
                    await self._dead_letter(entry, reason, attempt)
                    return
                self.stats.retries += 1
                await asyncio.sleep(self.settings.retry_backoff_ms / 1000 * 2 ** (attempt - 1))

    async def _dead_letter(self, entry: StreamEntry, reason: str, deliveries: int) -> None:
        log.error("%s: %s entry %s -> dead letters: %s",
                  self.group, entry.stream, entry.entry_id.decode(), reason)  # fmt: skip
        fields = dead_letter_fields(
            entry, topic_name=self.topic.name, reason=reason, delivery_count=deliveries,
            group=self.group, consumer=self.replica_id,
        )  # fmt: skip
        stream = dead_letter_stream(self.topic.name)
        await _quiet(self.client.xadd(stream, fields, maxlen=DLQ_MAXLEN))  # type: ignore[arg-type]
        self.stats.count("dead_letter")


async def _quiet(call: Awaitable[Any]) -> Any:
    """A best-effort read or write: Redis being away only delays what depends on it."""
    try:
        return await call
    except Exception as exc:
        log.debug("best-effort Redis call failed: %s", exc)
        return None
