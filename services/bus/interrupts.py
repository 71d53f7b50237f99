"""Turns that were interrupted: the runtime drops their late messages by turn id.

The runtime of every stage that reads `control` (services.bus.control) adds the turns it
is told to interrupt; an interruptible stage's handlers never see those turns' entries
(they are acknowledged unhandled). The set is bounded: a turn old enough to be forgotten
has no messages left in flight.
"""

from collections import OrderedDict

from contracts import Envelope

REMEMBERED_TURNS = 4096


class InterruptedTurns:
    def __init__(self, capacity: int = REMEMBERED_TURNS) -> None:
        self.capacity = capacity
        self._turns: OrderedDict[tuple[str, str], None] = OrderedDict()

    def add(self, session_id: str, turn_id: str) -> None:
        self._turns[(session_id, turn_id)] = None
        self._turns.move_to_end((session_id, turn_id))
        while len(self._turns) > self.capacity:
            self._turns.popitem(last=False)

    def covers_turn(self, session_id: str, turn_id: str) -> bool:
        return (session_id, turn_id) in self._turns

    def covers(self, message: Envelope) -> bool:
        """True for a message of an interrupted turn."""
        return message.turn_id is not None and self.covers_turn(message.session_id, message.turn_id)
