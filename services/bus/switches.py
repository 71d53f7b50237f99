"""Module switches and panic: which stages are off, shared by every replica of every stage.

`ModuleToggle(module, enabled)` switches one stage (by its name) off or on; `Panic(engaged)`
switches off every stage but the exempt ones (gateway, monitor: the panel must still reach
the character and show what it does) and interrupts the turns in progress at once.

The runtime applies them for every stage (services.bus.runtime), the harness in memory:
a stage that is off has the messages it consumes acknowledged without its handler seeing
them ("muted"); control still reaches it, so it can be switched back on. A producer asks
`bus.switched_off()` (capture stops publishing frames but keeps reading its source).

Every replica reads every control message, and a starting one reads back the history, so
the newest setting wins: one older than the one applied is ignored. Settings outlive that
history in one Redis hash, SWITCHES_KEY, which any replica applying a newer one writes (the
same value on all), and a starting runtime reads before it serves.
"""

import json
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from contracts import Control, Envelope, ModuleToggle, Panic
from contracts.turns import playback_ended, reply_ended, speech_ended
from services.bus.recovery import REDIS_UNAVAILABLE, Backoff

log = logging.getLogger("marionette.bus")

SWITCHES_KEY = "marionette:switches"
"""field `module:<name>` -> {"enabled": bool, "at": unix s}; field `panic` -> {"engaged", "at"}."""
PANIC_FIELD = "panic"
MODULE_PREFIX = "module:"
EXEMPT_FROM_PANIC: frozenset[str] = frozenset({"gateway", "monitor"})

Switch = ModuleToggle | Panic


class SwitchBoard(BaseModel):
    """The switches as stored: the modules ever toggled, panic, and when each was set."""

    modules: dict[str, bool] = Field(default_factory=dict)
    panic: bool = False
    modules_at: dict[str, float] = Field(default_factory=dict)
    panic_at: float | None = None

    def off(self, module: str) -> bool:
        """Whether that stage is switched off (its own toggle, or panic)."""
        switched_off = not self.modules.get(module, True)
        return switched_off or (self.panic and module not in EXEMPT_FROM_PANIC)


class Switches:
    """The switches one process applied: the newest setting of each wins."""

    def __init__(self) -> None:
        self._board = SwitchBoard()

    @property
    def board(self) -> SwitchBoard:
        return self._board.model_copy(deep=True)

    @property
    def panic(self) -> bool:
        return self._board.panic

    def off(self, module: str) -> bool:
        return self._board.off(module)

    def enabled(self, module: str) -> bool:
        """Its own toggle, panic aside."""
        return self._board.modules.get(module, True)

    def apply(self, command: Switch, at: float) -> bool:
        """Apply a setting made at `at` (unix s); False (ignored) when one set at the same
        time or later was applied already."""
        if isinstance(command, Panic):
            return self._set_panic(command.engaged, at)
        return self._set_module(command.module, command.enabled, at)

    def restore(self, stored: SwitchBoard) -> None:
        """Take what was stored where it is newer than what is known here."""
        for module, enabled in stored.modules.items():
            self._set_module(module, enabled, stored.modules_at.get(module, -math.inf))
        if stored.panic_at is not None:
            self._set_panic(stored.panic, stored.panic_at)

    def _set_module(self, module: str, enabled: bool, at: float) -> bool:
        board = self._board
        last = board.modules_at.get(module)
        if last is not None and at <= last:
            return False
        board.modules[module] = enabled
        board.modules_at[module] = at
        return True

    def _set_panic(self, engaged: bool, at: float) -> bool:
        board = self._board
        if board.panic_at is not None and at <= board.panic_at:
            return False
        board.panic, board.panic_at = engaged, at
        return True


# --- in Redis ------------------------------------------------------------------------------

# HSET only if newer: every replica applying a toggle writes it, whichever order they come in.
_STORE_IF_NEWER = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, value = pcall(cjson.decode, old)
  if ok and type(value) == 'table' and tonumber(value['at'])
      and tonumber(value['at']) >= tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def _field(command: Switch, at: float) -> tuple[str, str]:
    if isinstance(command, Panic):
        return PANIC_FIELD, json.dumps({"engaged": command.engaged, "at": at})
    return MODULE_PREFIX + command.module, json.dumps({"enabled": command.enabled, "at": at})


async def store_switch(client: Redis, command: Switch, at: float) -> bool:
    """Write the setting unless a newer one is stored; True when written."""
    name, value = _field(command, at)
    written = await client.eval(_STORE_IF_NEWER, 1, SWITCHES_KEY, name, value, repr(at))
    return bool(written)


async def read_switches(client: Redis) -> SwitchBoard:
    """The stored switches (what /api/status shows); fields that do not parse are skipped."""
    raw: dict[Any, Any] = await client.hgetall(SWITCHES_KEY)
    board = SwitchBoard()
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        try:
            setting = json.loads(value)
            at = float(setting["at"])
            if name == PANIC_FIELD:
                board.panic, board.panic_at = bool(setting["engaged"]), at
            elif name.startswith(MODULE_PREFIX):
                module = name.removeprefix(MODULE_PREFIX)
                board.modules[module] = bool(setting["enabled"])
                board.modules_at[module] = at
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("%s: field %s does not parse (%s); ignored", SWITCHES_KEY, name, exc)
    return board


async def read_switches_patiently(client: Redis, what: str) -> SwitchBoard:
    """read_switches, waiting for Redis while it is away (a stage starting)."""
    backoff = Backoff()
    while True:
        try:
            return await read_switches(client)
        except REDIS_UNAVAILABLE as exc:
            log.warning("%s: cannot read the switches yet (%s); waiting", what, exc)
            await backoff.wait()


# --- what a stage's runtime keeps ------------------------------------------------------------

TURNS_PER_SESSION = 8
SESSIONS = 1024


class TurnsInProgress:
    """Turns whose messages this replica handled lately and that have not ended, per session
    (bounded: a turn forgotten too early was idle long ago, and interrupting one that ended
    is harmless)."""

    def __init__(self, per_session: int = TURNS_PER_SESSION, sessions: int = SESSIONS) -> None:
        self.per_session = per_session
        self.sessions = sessions
        self._turns: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def started(self, message: Envelope) -> None:
        """Its handler is about to run."""
        if message.turn_id is None:
            return  # audio frames: no turn of their own
        turns = self._turns.setdefault(message.session_id, OrderedDict())
        self._turns.move_to_end(message.session_id)
        turns[message.turn_id] = None
        turns.move_to_end(message.turn_id)
        while len(turns) > self.per_session:
            turns.popitem(last=False)
        while len(self._turns) > self.sessions:
            self._turns.popitem(last=False)

    def finished(self, message: Envelope) -> None:
        """Its handler returned: a message that ends its turn (contracts.turns) ends it here."""
        if message.turn_id is None:
            return
        if reply_ended(message) or speech_ended(message) or playback_ended(message):
            turns = self._turns.get(message.session_id)
            if turns is not None:
                turns.pop(message.turn_id, None)
                if not turns:
                    del self._turns[message.session_id]

    def take(self) -> list[tuple[str, str]]:
        """Every (session, turn) in progress, forgotten here (they are being interrupted)."""
        taken = [(session, turn) for session, turns in self._turns.items() for turn in turns]
        self._turns.clear()
        return taken

    def __len__(self) -> int:
        return sum(len(turns) for turns in self._turns.values())


Interrupt = Callable[[str, str], Awaitable[None]]
Store = Callable[[Switch, float], Awaitable[Any]]


class StageSwitch:
    """The switches as one stage obeys them: whether its runtime mutes it, and what a
    change does (log it, store it, interrupt the turns in progress on panic)."""

    def __init__(self, module: str, *, interrupt: Interrupt, store: Store | None = None) -> None:
        """interrupt(session, turn): the path an Interrupt takes (note the turn, tell the
        stage); store: writes a newer setting where every replica finds it."""
        self.module = module
        self.switches = Switches()
        self.turns = TurnsInProgress()
        self._interrupt = interrupt
        self._store = store

    @property
    def off(self) -> bool:
        return self.switches.off(self.module)

    def restore(self, stored: SwitchBoard) -> None:
        """At start, before serving: the stored switches."""
        was_off = self.off
        self.switches.restore(stored)
        if self.off != was_off:
            why = "panic" if self.switches.panic else "module toggle"
            log.info("%s: switched off at start (%s, stored)", self.module, why)

    async def follow(self, message: Control) -> None:
        """A control message: apply a ModuleToggle or Panic newer than the last applied."""
        command = message.command
        if not isinstance(command, ModuleToggle | Panic):
            return
        at = message.created_at.timestamp()
        was_off = self.off
        if not self.switches.apply(command, at):
            return  # older than what this replica applied: newest wins
        self._log_change(command, was_off)
        if isinstance(command, Panic) and command.engaged and self.off:
            for session_id, turn_id in self.turns.take():
                await self._interrupt(session_id, turn_id)
        if self._store is not None:  # after the interrupts: a slow Redis must not delay them
            try:
                await self._store(command, at)
            except Exception as exc:  # every replica stores it; one that fails is not alone
                log.warning("%s: could not store %s: %s", self.module, command.kind, exc)

    def _log_change(self, command: Switch, was_off: bool) -> None:
        if isinstance(command, ModuleToggle) and command.module != self.module:
            return
        off, panic = self.off, self.switches.panic
        why = "module toggle" if isinstance(command, ModuleToggle) else "panic"
        if isinstance(command, Panic) and not command.engaged:
            why = "panic over"
        if off == was_off:  # say what holds it as it is
            if isinstance(command, ModuleToggle) and panic and off:
                why += "; panic holds it"
            elif isinstance(command, Panic) and self.module in EXEMPT_FROM_PANIC:
                why += "; exempt"
            elif isinstance(command, Panic) and not self.switches.enabled(self.module):
                why += "; its toggle holds it"
        verb = "switched" if off != was_off else "stays"
        log.info("%s: %s %s (%s)", self.module, verb, "off" if off else "on", why)


__all__ = [
    "EXEMPT_FROM_PANIC",
    "SWITCHES_KEY",
    "StageSwitch",
    "Switch",
    "SwitchBoard",
    "Switches",
    "TurnsInProgress",
    "read_switches",
    "read_switches_patiently",
    "store_switch",
]
