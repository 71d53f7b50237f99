"""Which consumed entry caused a publish: two headers that let tools time every bus hop.

While a handler runs, the runtime remembers the entry it is handling; everything the
handler publishes carries that entry's stream and id (`marionette-cause`) and the wall
time the entry was read from Redis (`marionette-read-at`). With the entry id's own
timestamp (when it was added), a tool can tell, for each message of a turn, how long
its cause waited on the bus and how long the stage worked on it. `marionette bench`
reads these; tracing (spans) goes in W3C headers beside them.
"""

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from services.bus.wire import entry_time

CAUSE_HEADER = "marionette-cause"
READ_AT_HEADER = "marionette-read-at"


@dataclass(frozen=True)
class Cause:
    stream: str
    entry_id: str
    read_at: float  # time.time() when the consumer read it

    @property
    def added_at(self) -> float:
        """When the entry was added to its stream: the milliseconds of its id."""
        return entry_time(self.entry_id)


current_cause: ContextVar[Cause | None] = ContextVar("marionette_cause", default=None)


def cause_headers() -> dict[str, str]:
    cause = current_cause.get()
    if cause is None:
        return {}
    return {
        CAUSE_HEADER: f"{cause.stream} {cause.entry_id}",
        READ_AT_HEADER: f"{cause.read_at:.6f}",
    }


def cause_from_headers(headers: dict[str, Any]) -> Cause | None:
    """The cause a message's headers name, or None for a message from outside the bus."""
    named = headers.get(CAUSE_HEADER)
    read_at = headers.get(READ_AT_HEADER)
    if not named or read_at is None:
        return None
    stream, _, entry_id = str(named).partition(" ")
    return Cause(stream, entry_id, float(read_at))
