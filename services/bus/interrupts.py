"""Turns that were interrupted: a stage drops their late messages by turn id.

Each stage that consumes `control` adds the turns it is told to interrupt; consumers
declared with drop_interrupted=True then acknowledge that turn's entries without handling
them. The set is bounded: a turn old enough to be forgotten has no messages left in flight.
"""

from collections import OrderedDict

from contracts import Control, Envelope, Interrupt

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

    def note(self, message: Control) -> Interrupt | None:
        """Remember the turn if `message` interrupts one; returns the Interrupt, if it was."""
        command = message.command
        if not isinstance(command, Interrupt):
            return None
        self.add(message.session_id, command.target_turn_id)
        return command

    def covers_turn(self, session_id: str, turn_id: str) -> bool:
        return (session_id, turn_id) in self._turns

    def covers(self, message: Envelope) -> bool:
        """True for a message of an interrupted turn."""
        return message.turn_id is not None and self.covers_turn(message.session_id, message.turn_id)
