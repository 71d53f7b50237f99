"""Tools in a turn: which are offered, the routed call before the reply, and a round of
calls run while the character says the filler line.

Native tool calling: the model is offered the tools with its reply and calls them itself;
routed (the bundled model, too small to choose well): the gate picks the tool from the
line's meaning, the model writes its arguments, and that round runs before the reply.
Either way a round's calls and results join the reply's checkpointed progress, so the
model goes on from them, and a turn taken over after a crash does not run them again.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from contracts.control import Command
from contracts.vision import VisionObservation
from services.memory.long_term import LongTermMemory
from services.policy.backends import BackendFailed, ChatBackend, Generation, ToolCaller
from services.policy.reply import ReplyProgress, ReplyStream
from services.policy.settings import PolicySettings
from services.policy.tools.builtin import now_local
from services.policy.tools.declared import ToolContext
from services.policy.tools.gate import ToolGate
from services.policy.tools.runner import ToolRan, ToolRunner
from services.policy.tools.wire import Messages, ToolCall, ToolSpecs, exchange

log = logging.getLogger("marionette.policy")

TOOL_CALL_PROMPT = "Call the tool for the user's message, with the arguments it asks for."
TOOL_CALL_TOKENS = 60


@dataclass(frozen=True)
class ToolTurn:
    """What the tools see of a turn."""

    session_id: str
    turn_id: str
    text: str  # the line as said
    line: str  # the line as the prompt shows it (a viewer's quoted)
    author: str | None
    may_act: bool  # the streamer or the operator: may change the stream
    seed: int
    persona: str
    expressions: Sequence[str]
    scopes: Sequence[str]  # where the turn's long-term memory is


class ToolRounds:
    def __init__(
        self,
        settings: PolicySettings,
        backend: ChatBackend,
        runner: ToolRunner,
        gate: ToolGate | None,
        *,
        control: Callable[[ToolTurn, Command, int], Awaitable[None]],
        latest_view: Callable[[str], Awaitable[VisionObservation | None]],
        long_term: LongTermMemory | None,
        keep: Callable[[ToolTurn, ReplyProgress], Awaitable[None]],
        routed: bool,
    ) -> None:
        """control(turn, command, n): publish the turn's n-th control command; keep(turn,
        progress): checkpoint the reply's progress now. routed: the gate chooses (without
        a gate, no tools are used)."""
        self.settings = settings
        self.backend = backend
        self.runner = runner
        self.gate = gate if routed else None
        self.routed = routed
        self._control = control
        self._latest_view = latest_view
        self._long_term = long_term
        self._keep = keep

    def offered(self, turn: ToolTurn, progress: ReplyProgress) -> ToolSpecs | None:
        """The tools offered to the model with the reply (native tool calling only)."""
        if self.routed or progress.tool_rounds >= self.settings.max_tool_rounds:
            return None
        return self.runner.specs(turn.may_act) or None

    async def route(self, reply: ReplyStream, turn: ToolTurn) -> None:
        """Routed: if the line asks for a tool, let the model write the call and run it,
        before the reply begins (or goes on, after a crash, once its round is kept)."""
        progress = reply.progress
        if self.gate is None or progress.tool_rounds or progress.generated:
            return
        allowed = [tool.name for tool in self.runner.offered(turn.may_act)]
        name = await asyncio.to_thread(self.gate.pick, turn.text, allowed)
        if name is None:
            return
        request: Messages = [
            {"role": "system", "content": TOOL_CALL_PROMPT},
            {"role": "user", "content": turn.line},
        ]
        # Only the chosen tool is shown: a short prompt to evaluate (all eight tools are
        # ~840 tokens, over a minute on two busy cores the first time).
        specs = [s for s in self.runner.specs(turn.may_act) if s["function"]["name"] == name]
        caller = self.backend
        assert isinstance(caller, ToolCaller)  # routes_tools() made sure

        async def call() -> list[ToolCall]:
            options = Generation(0.0, TOOL_CALL_TOKENS, turn.seed)
            try:
                return [await caller.call_tool(request, specs, name, options)]
            except BackendFailed as exc:
                log.warning("%s/%s: no tool call (%s)", turn.session_id, turn.turn_id, exc)
                return []

        # A call the model got wrong is left out of the reply's prompt: a small model
        # would only talk about the error ("that's not a valid JSON object").
        ran = await self.run(reply, turn, call(), keep_errors=False)
        for result in ran:
            tool = self.runner.tools.get(result.call.name)
            if result.outcome == "ok" and tool is not None and tool.says_result:
                # Also the beginning of the model's reply, which it goes on from (as after
                # a crash), rather than saying the result a second time.
                reply.progress.generated += f"{result.result} "
                await reply.say(result.result)

    async def run(
        self,
        reply: ReplyStream,
        turn: ToolTurn,
        calls: list[ToolCall] | Awaitable[list[ToolCall]],
        keep_errors: bool = True,
    ) -> list[ToolRan]:
        """Run a round of calls (routed: first let the model write them); if that takes a
        while, say the filler line meanwhile. The round and its results are kept with the
        reply's progress, at once; without keep_errors, only the calls that worked (or
        were refused, or timed out: the model can say so). Returns the calls kept."""
        progress = reply.progress
        await reply.settle()  # what the model said before calling goes out first
        said = progress.generated[progress.round_start :]
        context = self._context(turn, reply)
        round_no = progress.tool_rounds

        async def run() -> list[ToolRan]:
            wanted = calls if isinstance(calls, list) else await calls
            return await self.runner.run_all(wanted, context, turn.may_act, round_no)

        running = asyncio.ensure_future(run())
        done, _ = await asyncio.wait({running}, timeout=self.settings.tool_filler_after_ms / 1000)
        if not done and self.settings.tool_filler:
            await reply.say(self.settings.tool_filler)
        ran = [r for r in await running if keep_errors or r.outcome != "error"]
        if not ran:
            return []
        progress.tool_messages += exchange(said, [r.call for r in ran], [r.result for r in ran])
        progress.tool_rounds += 1
        progress.round_start = len(progress.generated)
        await self._keep(turn, progress)
        return ran

    def _now(self) -> datetime:
        """The character's time: in its time zone (MARIONETTE_POLICY_TIMEZONE), else the
        machine's."""
        zone = self.settings.timezone
        return datetime.now(ZoneInfo(zone)) if zone else now_local()

    def _context(self, turn: ToolTurn, reply: ReplyStream) -> ToolContext:
        sent = 0

        async def control(command: Command) -> None:
            nonlocal sent  # each command of the turn its own id (a redone turn, the same)
            await self._control(turn, command, sent)
            sent += 1

        async def latest_view() -> VisionObservation | None:
            return await self._latest_view(turn.session_id)

        return ToolContext(
            session_id=turn.session_id, turn_id=turn.turn_id, author=turn.author,
            persona=turn.persona, expressions=turn.expressions, seed=turn.seed,
            now=self._now, express=reply.express, control=control, latest_view=latest_view,
            said=turn.text, long_term=self._long_term, scopes=turn.scopes,
        )  # fmt: skip
