"""A stage: a class that consumes typed messages and publishes others.

    class Captions(Stage):
        name = "captions"                      # its consumer group
        highlights = Publishes(CHAT_MESSAGE)   # what it publishes, declared beside its handlers

        @consumes(POLICY_TOKEN)
        async def on_token(self, token: PolicyToken) -> None:
            if token.final:
                print(token.reply_text)

A stage is built from its settings and backends, and the bus is handed to it
(`Captions(bus)`; a stage with a model loads it in `build`). Under `marionette run` the
bus is Redis (services.bus.runtime); in a unit test it is memory (services.bus.harness).
The runtime, not the stage, owns delivery: it drops duplicates, keeps each session in
order on one replica, drops the late messages of interrupted turns, retries, dead-letters,
and recovers from crashes. What a stage builds across messages goes in `Checkpointed`
state, which the runtime stores with the writes that depend on it, so a replacement
replica carries on where a killed one stopped.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, overload

from pydantic import BaseModel

from contracts.envelope import Envelope
from contracts.topics import Topic

M = TypeVar("M", bound=Envelope)
S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")
H = TypeVar("H", bound=Callable[..., Any])


M_contra = TypeVar("M_contra", bound=Envelope, contravariant=True)


class Publisher(Protocol[M_contra]):
    async def publish(self, message: M_contra) -> bytes | None:
        """Send the message on its topic (awaited: it is in Redis when this returns);
        the id of its entry where there is one."""


class State(Protocol[S]):
    """A stage's state per session and key, kept in memory and checkpointed by the runtime.

    `save` marks it to be stored with the handler's next write (a publish, or the
    acknowledgement of the message in hand); so after a crash, `load` gives the state that
    matches what had been published. Outside a handler, `save` changes it in memory only."""

    async def load(self, session_id: str, key: str = "") -> S | None: ...
    def save(self, session_id: str, key: str, value: S) -> None: ...
    def forget(self, session_id: str, key: str = "") -> None: ...


class SessionMemory(Generic[T]):
    """What a stage keeps in memory per session and does not checkpoint (a model's decoder
    state, an open utterance rebuilt from held frames). The runtime empties it for the
    sessions of a partition this replica loses, since their messages will be handled again."""

    def __init__(self, make: Callable[[str], T]) -> None:
        self._make = make
        self._values: dict[str, T] = {}

    def __getitem__(self, session_id: str) -> T:
        if session_id not in self._values:
            self._values[session_id] = self._make(session_id)
        return self._values[session_id]

    def get(self, session_id: str) -> T | None:
        return self._values.get(session_id)

    def put(self, session_id: str, value: T) -> None:
        self._values[session_id] = value

    def pop(self, session_id: str) -> T | None:
        return self._values.pop(session_id, None)

    def drop(self, lost: Callable[[str], bool]) -> None:
        for session_id in [s for s in self._values if lost(s)]:
            del self._values[session_id]

    def __len__(self) -> int:
        return len(self._values)


class KeyValue(Protocol):
    """Data every replica of every stage shares (the persona, a session's memory): Redis
    under the runtime (redis.asyncio.Redis is one), a dict in the harness."""

    async def get(self, name: str) -> bytes | None: ...
    async def set(self, name: str, value: str | bytes, ex: int | None = None) -> Any: ...


class MemoryKeyValue:
    """A KeyValue in a dict (the harness's shared store, a remote speaker's own);
    expiry is not modelled."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def get(self, name: str) -> bytes | None:
        return self.values.get(name)

    async def set(self, name: str, value: str | bytes, ex: int | None = None) -> bool:
        self.values[name] = value.encode() if isinstance(value, str) else value
        return True


class Bus(Protocol):
    """What a stage sees of the bus."""

    replica_id: str
    store: KeyValue

    def publisher(self, topic: Topic[M]) -> Publisher[M]: ...
    def state(self, name: str, model: type[S]) -> State[S]: ...
    def memory(self, make: Callable[[str], T]) -> SessionMemory[T]:
        """Per-session memory that the runtime empties when the session moves away."""

    def interrupted(self, session_id: str, turn_id: str | None) -> bool:
        """Whether that turn was interrupted (control): its work is no longer wanted."""

    def switched_off(self) -> bool:
        """Whether this stage is switched off (module toggle or panic): the runtime then
        mutes its handlers; a stage publishing on its own (capture) asks this."""

    def hold(self) -> None:
        """Keep the message in hand unacknowledged after its handler returns, so that it is
        delivered again if this replica dies (asr holds the frames of an open utterance)."""

    def release(self, session_id: str, *, keep_last: int = 0) -> None:
        """Acknowledge the session's held messages (with the next write), all but the
        `keep_last` latest."""

    async def checkpoint(self) -> None:
        """Store the changed state now (playback's position inside a long chunk)."""

    def status_changed(self) -> None:
        """The stage's status() changed: /api/status shows it at once, not at the next beat."""

    async def stage_running(self, stage: str) -> bool:
        """Whether a replica of that stage is running (built, models warmed up): its
        heartbeat is fresh. Capture waits for asr with it."""


@dataclass(frozen=True)
class Consumer:
    """A handler declared with @consumes."""

    topic: Topic[Any]
    method: str
    drop_interrupted: bool | None  # None: as the stage is interruptible
    while_off: bool = False  # handled even while the stage is switched off


_CONSUMES = "__marionette_consumes__"


def consumes(
    topic: Topic[Any], *, drop_interrupted: bool | None = None, while_off: bool = False
) -> Callable[[H], H]:
    """Declare a method as the handler of a topic. Messages of interrupted turns are dropped
    before they reach it when the stage is interruptible (unless drop_interrupted=False).
    A stage switched off (a module toggle, panic) does not see its messages, except with
    while_off=True: bookkeeping that must stay true meanwhile (what the user heard, whether
    they are talking), never output."""

    def mark(method: H) -> H:
        setattr(method, _CONSUMES, (topic, drop_interrupted, while_off))
        return method

    return mark


class Publishes(Generic[M]):
    """`chunks = Publishes(TTS_CHUNK)` on a stage class: `self.chunks.publish(chunk)`."""

    def __init__(self, topic: Topic[M]) -> None:
        self.topic = topic

    @overload
    def __get__(self, stage: None, owner: type) -> "Publishes[M]": ...
    @overload
    def __get__(self, stage: "Stage", owner: type) -> Publisher[M]: ...
    def __get__(self, stage: "Stage | None", owner: type) -> "Publishes[M] | Publisher[M]":
        if stage is None:
            return self
        return stage.bus.publisher(self.topic)


class Checkpointed(Generic[S]):
    """`speech = Checkpointed(TurnSpeech)` on a stage class: state that survives a crash."""

    def __init__(self, model: type[S]) -> None:
        self.model = model
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, stage: None, owner: type) -> "Checkpointed[S]": ...
    @overload
    def __get__(self, stage: "Stage", owner: type) -> State[S]: ...
    def __get__(self, stage: "Stage | None", owner: type) -> "Checkpointed[S] | State[S]":
        if stage is None:
            return self
        return stage.bus.state(self.name, self.model)


BACKGROUND_NICENESS = 10


class Stage:
    """Subclass it: a name, handlers with @consumes, Publishes and Checkpointed beside them."""

    name: ClassVar[str]
    interruptible: ClassVar[bool] = False
    """The runtime drops late messages of interrupted turns and calls on_interrupt."""
    niceness: ClassVar[int] = 0
    """Its process's CPU priority (os.nice): above 0 for a stage that must give way on a
    small machine. Stages outside a turn's path from the user's voice to the first audio
    (avatar, monitor, arbiter) take BACKGROUND_NICENESS; policy a little (while tts
    speaks the first unit, the LLM writing the next one can wait)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @classmethod
    async def build(cls, bus: Bus) -> Self:
        """Make the stage from its settings (load its model here); `marionette run` calls it."""
        return cls(bus)

    async def on_interrupt(self, session_id: str, turn_id: str) -> None:
        """A turn was interrupted: drop what is in progress for it (interruptible stages)."""

    async def background(self) -> None:
        """Work of its own while the stage runs (the avatar's blinks); returns when done."""

    def status(self) -> dict[str, Any] | None:
        """What /api/status shows of this replica beyond its heartbeat (JSON-able): an
        integration's connection, say. Read at every beat; keep it cheap."""
        return None

    def wanted(self, message: Envelope) -> bool:
        """Not part of an interrupted turn."""
        return not self.bus.interrupted(message.session_id, message.turn_id)

    @classmethod
    def consumers(cls) -> list[Consumer]:
        found = []
        for name in dir(cls):
            declared = getattr(getattr(cls, name, None), _CONSUMES, None)
            if declared is not None:
                topic, drop, while_off = declared
                found.append(Consumer(topic, name, drop, while_off))
        topics = [c.topic.name for c in found]
        duplicated = {t for t in topics if topics.count(t) > 1}
        if duplicated:
            raise TypeError(f"stage {cls.__name__} consumes {', '.join(duplicated)} twice")
        return sorted(found, key=lambda c: c.topic.name)

    @classmethod
    def published_topics(cls) -> list[Topic[Any]]:
        return [
            attr.topic
            for name in dir(cls)
            if isinstance(attr := getattr(cls, name, None), Publishes)
        ]

    def drops_interrupted(self, consumer: Consumer) -> bool:
        if consumer.drop_interrupted is None:
            return self.interruptible
        return consumer.drop_interrupted
