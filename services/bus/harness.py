"""A stage in memory, for fast tests: feed it typed messages, see what it published.

    harness = StageHarness(lambda bus: TtsStage(settings, FakeSynthesizer(), bus))
    await harness.send(*tokens)
    chunks = harness.published(TTS_CHUNK)

The harness keeps the runtime's rules (services.bus.runtime) without Redis: duplicates of
a (session, origin, seq) are dropped, messages of interrupted turns are dropped before an
interruptible stage's handlers and on_interrupt is called, a stage switched off (module
toggle, panic: services.bus.switches) has its messages acknowledged unhandled and a panic
interrupts its turns in progress, state is stored with the handler's publishes and
acknowledgements, held messages stay unacknowledged. It also plays a crash:
`crash_after(publishes=N)` kills the handler at its Nth publish, and `restart()` builds a
new stage on what was stored and delivers again what was not acknowledged, as a
replacement replica would.
"""

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from contracts import Control, Interrupt
from contracts.envelope import Envelope
from contracts.topics import ALL_TOPICS, Topic
from services.bus.interrupts import InterruptedTurns
from services.bus.stage import Consumer, KeyValue, MemoryKeyValue, SessionMemory, Stage
from services.bus.switches import StageSwitch, Switch, Switches

M = TypeVar("M", bound=Envelope)
S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")
StageT = TypeVar("StageT", bound=Stage)


class SimulatedCrash(BaseException):
    """The stage process 'died' here (a BaseException, so handlers do not catch it)."""


@dataclass
class _Stored:
    """What Redis would hold: it outlives a crash of the stage."""

    store: MemoryKeyValue = field(default_factory=MemoryKeyValue)
    state: dict[str, str] = field(default_factory=dict)
    marks: dict[tuple[str, str, str], int] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)
    unacknowledged: list[tuple[Topic[Any], Envelope]] = field(default_factory=list)
    published: list[tuple[Topic[Any], Envelope]] = field(default_factory=list)
    switches: Switches = field(default_factory=Switches)  # the marionette:switches hash


@dataclass
class _InHand:
    topic: Topic[Any]
    message: Envelope
    state: dict[str, BaseModel | None] = field(default_factory=dict)
    held: bool = False
    released: list[Envelope] = field(default_factory=list)


class _MemoryPublisher:
    def __init__(self, bus: "MemoryBus", topic: Topic[Any]) -> None:
        self.bus = bus
        self.topic = topic

    async def publish(self, message: Envelope) -> bytes | None:
        if not isinstance(message, self.topic.model):
            raise TypeError(f"{self.topic.name} carries {self.topic.model.__name__}")
        self.bus.harness.count_publish()  # a crash here: neither the message nor the state
        self.bus.flush()
        self.bus.stored.published.append((self.topic, message))
        return None


class _MemoryState(Generic[S]):
    def __init__(self, bus: "MemoryBus", name: str, model: type[S]) -> None:
        self.bus = bus
        self.prefix = name
        self.model = model
        self.cache: dict[str, S | None] = {}

    def _key(self, session_id: str, key: str) -> str:
        return f"{self.prefix}:{session_id}:{key}"

    async def load(self, session_id: str, key: str = "") -> S | None:
        full = self._key(session_id, key)
        if full not in self.cache:
            raw = self.bus.stored.state.get(full)
            self.cache[full] = None if raw is None else self.model.model_validate_json(raw)
        return self.cache[full]

    def save(self, session_id: str, key: str, value: S) -> None:
        full = self._key(session_id, key)
        self.cache[full] = value
        if self.bus.current is not None:
            self.bus.current.state[full] = value

    def forget(self, session_id: str, key: str = "") -> None:
        full = self._key(session_id, key)
        self.cache[full] = None
        if self.bus.current is not None:
            self.bus.current.state[full] = None


_in_hand: ContextVar["_InHand | None"] = ContextVar("marionette_in_hand", default=None)
"""The message a handler is handling, per task (handlers of several topics run at once)."""


class MemoryBus:
    """The Bus of a stage under StageHarness."""

    @property
    def current(self) -> "_InHand | None":
        return _in_hand.get()

    def __init__(self, harness: "StageHarness[Any]") -> None:
        self.harness = harness
        self.stored = harness.stored
        self.store: KeyValue = harness.stored.store
        self.replica_id = f"memory-{harness.restarts}"
        self.held: dict[str, list[tuple[Topic[Any], Envelope]]] = {}
        self._states: dict[str, _MemoryState[Any]] = {}

    def publisher(self, topic: Topic[M]) -> _MemoryPublisher:
        return _MemoryPublisher(self, topic)

    def state(self, name: str, model: type[S]) -> _MemoryState[S]:
        if name not in self._states:
            self._states[name] = _MemoryState(self, name, model)
        return self._states[name]

    def memory(self, make: Callable[[str], T]) -> SessionMemory[T]:
        return SessionMemory(make)

    def interrupted(self, session_id: str, turn_id: str | None) -> bool:
        return turn_id is not None and self.harness.interrupts.covers_turn(session_id, turn_id)

    def switched_off(self) -> bool:
        return self.harness.switch.off

    def status_changed(self) -> None:
        self.harness.status_changes += 1

    async def stage_running(self, stage: str) -> bool:
        return True  # in memory, every stage a test needs is there

    def hold(self) -> None:
        self.in_hand("hold").held = True

    def release(self, session_id: str, *, keep_last: int = 0) -> None:
        current = self.in_hand("release")
        queue = self.held.get(session_id, [])
        mine = current.held and current.message.session_id == session_id
        items = [*queue, (current.topic, current.message)] if mine else list(queue)
        count = max(0, len(items) - keep_last)
        for _, message in items[:count]:
            if message is current.message:
                current.held = False
            else:
                current.released.append(message)
        self.held[session_id] = [i for i in items[count:] if i[1] is not current.message]

    async def checkpoint(self) -> None:
        self.in_hand("checkpoint")
        self.flush()

    def in_hand(self, what: str) -> _InHand:
        if self.current is None:
            raise RuntimeError(f"{what}() is for a handler, while it runs")
        return self.current

    def flush(self) -> None:
        """Store changed state and released messages, as a fenced write would."""
        current = self.current
        if current is None:
            return
        for key, value in current.state.items():
            if value is None:
                self.stored.state.pop(key, None)
            else:
                self.stored.state[key] = value.model_dump_json()
        current.state = {}
        for message in current.released:
            self.harness.acknowledge(message)
        current.released = []


class StageHarness(Generic[StageT]):
    def __init__(self, build: Callable[[MemoryBus], StageT]) -> None:
        self.build = build
        self.stored = _Stored()
        self.interrupts = InterruptedTurns()
        self.restarts = 0
        self.status_changes = 0  # times the stage said its status() changed
        self._crash_at: int | None = None
        self._publishes = 0
        self.bus = MemoryBus(self)
        self.stage = build(self.bus)
        self.switch = self._new_switch()
        self._consumers = {c.topic.name: c for c in self.stage.consumers()}

    # --- what a test does -------------------------------------------------------------

    async def send(self, *messages: Envelope) -> list[Envelope]:
        """Deliver the messages in order; returns what the stage published meanwhile."""
        before = len(self.stored.published)
        for message in messages:
            await self.deliver(_topic_of(message), message)
        return [message for _, message in self.stored.published[before:]]

    def published(self, topic: Topic[M] | None = None) -> list[Any]:
        return [m for t, m in self.stored.published if topic is None or t.name == topic.name]

    def crash_after(self, *, publishes: int) -> None:
        """The stage dies (SimulatedCrash) at its `publishes`-th publish from now, before it."""
        self._crash_at = self._publishes + publishes

    async def restart(self) -> list[Envelope]:
        """A replacement stage: built anew on what was stored, it gets every message not
        acknowledged again, in order. Returns what it published meanwhile."""
        self.restarts += 1
        self._crash_at = None
        self.bus = MemoryBus(self)
        self.stage = self.build(self.bus)
        self.switch = self._new_switch()
        again, self.stored.unacknowledged = self.stored.unacknowledged, []
        before = len(self.stored.published)
        for topic, message in again:
            await self.deliver(topic, message)
        return [message for _, message in self.stored.published[before:]]

    # --- the runtime's rules ----------------------------------------------------------

    def count_publish(self) -> None:
        self._publishes += 1
        if self._crash_at is not None and self._publishes >= self._crash_at:
            self._crash_at = None
            raise SimulatedCrash(f"crash at publish {self._publishes}")

    def acknowledge(self, message: Envelope) -> None:
        self.stored.unacknowledged = [
            (t, m) for t, m in self.stored.unacknowledged if m is not message
        ]
        topic = _topic_of(message)
        if topic.ordered:
            key = (topic.name, message.session_id, message.origin)
            self.stored.marks[key] = max(self.stored.marks.get(key, -1), message.seq)
        else:
            self.stored.seen.add((topic.name, message.message_id))

    def _duplicate(self, topic: Topic[Any], message: Envelope) -> bool:
        if topic.ordered:
            mark = self.stored.marks.get((topic.name, message.session_id, message.origin), -1)
            return message.seq <= mark
        return (topic.name, message.message_id) in self.stored.seen

    async def deliver(self, topic: Topic[Any], message: Envelope) -> None:
        if isinstance(message, Control):
            await self._control(message)
        consumer = self._consumers.get(topic.name)
        if consumer is None:
            return
        if not topic.ordered:
            await getattr(self.stage, consumer.method)(message)
            return
        if self._duplicate(topic, message):
            return
        if self._stale(consumer, message) or (self.switch.off and not consumer.while_off):
            self.acknowledge(message)
            return
        self.switch.turns.started(message)
        self.stored.unacknowledged.append((topic, message))
        current = _InHand(topic, message)
        token = _in_hand.set(current)
        try:
            await getattr(self.stage, consumer.method)(message)
            self.bus.flush()  # the acknowledgement's write carries the last changes
        finally:
            _in_hand.reset(token)
        self.switch.turns.finished(message)
        if current.held:
            self.bus.held.setdefault(message.session_id, []).append((topic, message))
        else:
            self.acknowledge(message)

    def _stale(self, consumer: Consumer, message: Envelope) -> bool:
        return self.stage.drops_interrupted(consumer) and self.bus.interrupted(
            message.session_id, message.turn_id
        )

    async def _control(self, message: Control) -> None:
        command = message.command
        if isinstance(command, Interrupt):
            await self._interrupt(message.session_id, command.target_turn_id)
        await self.switch.follow(message)

    async def _interrupt(self, session_id: str, turn_id: str) -> None:
        if not self.interrupts.covers_turn(session_id, turn_id):
            self.interrupts.add(session_id, turn_id)
            if self.stage.interruptible:
                await self.stage.on_interrupt(session_id, turn_id)

    def _new_switch(self) -> StageSwitch:
        """The stage's switches, restored from what was stored (as from Redis at start)."""
        switch = StageSwitch(self.stage.name, interrupt=self._interrupt, store=self._store)
        switch.restore(self.stored.switches.board)
        return switch

    async def _store(self, command: Switch, at: float) -> None:
        self.stored.switches.apply(command, at)


def _topic_of(message: Envelope) -> Topic[Any]:
    for topic in ALL_TOPICS:
        if type(message) is topic.model:
            return topic
    raise TypeError(f"{type(message).__name__} is not the message of any topic")
