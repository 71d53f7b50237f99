"""Running the model's tool calls: check each against its declaration, run it within its
time limit, and publish the call and its result as tool.event messages.

A call never fails the turn: an unknown tool, bad arguments, an error, a timeout or a tool
the turn may not use all come back as a result the model reads (and an event that says
which), so the model can answer anyway.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from pydantic import ValidationError

from contracts.limits import MAX_REASON_CHARS
from contracts.tools import MAX_TOOL_RESULT_CHARS, ToolEvent, ToolOutcome
from services.policy.tools.declared import Tool, ToolContext, ToolError
from services.policy.tools.wire import ToolCall, ToolSpecs
from services.telemetry.metrics import TOOL_CALLS

tracer = trace.get_tracer("marionette.policy")


@dataclass(frozen=True)
class ToolRan:
    call: ToolCall
    call_id: str  # ours: stable when the turn is redone (a server's ids are not)
    outcome: ToolOutcome
    result: str  # what the model reads next
    elapsed_ms: float


class ToolRunner:
    def __init__(
        self,
        tools: Sequence[Tool],
        publish: Callable[[ToolEvent], Awaitable[object]],
        timeout_s: float,
    ) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.publish = publish
        self.timeout_s = timeout_s

    def offered(self, trusted: bool) -> list[Tool]:
        """The tools a turn may use: those acting on the stream only on trusted turns."""
        return [t for t in self.tools.values() if trusted or not t.acts_on_stream]

    def specs(self, trusted: bool) -> ToolSpecs:
        return [tool.spec() for tool in self.offered(trusted)]

    async def run_all(
        self, calls: Sequence[ToolCall], ctx: ToolContext, trusted: bool, round_no: int
    ) -> list[ToolRan]:
        """Every call of a round, at once; results in the calls' order."""
        runs = [
            self.run(call, ctx, trusted, f"r{round_no}c{index}") for index, call in enumerate(calls)
        ]
        return list(await asyncio.gather(*runs))

    async def run(self, call: ToolCall, ctx: ToolContext, trusted: bool, call_id: str) -> ToolRan:
        tool = self.tools.get(call.name)
        arguments = call.arguments or {}
        await self._event(ctx, call_id, call.name, 0, arguments=arguments)
        started = time.perf_counter()
        with tracer.start_as_current_span(
            f"tool {call.name or '?'}",
            attributes={"marionette.tool": call.name, "marionette.tool.call_id": call_id},
        ) as span:
            outcome, result = await self._outcome(tool, call, ctx, trusted)
            span.set_attribute("marionette.tool.outcome", outcome)
        elapsed_ms = (time.perf_counter() - started) * 1000
        result = result[:MAX_TOOL_RESULT_CHARS]
        TOOL_CALLS.labels(call.name if tool is not None else "unknown", outcome).inc()
        await self._event(ctx, call_id, call.name, 1, outcome=outcome, result=result,
                          elapsed_ms=elapsed_ms)  # fmt: skip
        return ToolRan(call, call_id, outcome, result, elapsed_ms)

    async def _outcome(
        self, tool: Tool | None, call: ToolCall, ctx: ToolContext, trusted: bool
    ) -> tuple[ToolOutcome, str]:
        if tool is None:
            names = ", ".join(self.tools)
            return "error", f"error: there is no tool {call.name!r}; there are: {names}"
        if tool.acts_on_stream and not trusted:
            return "refused", "refused: a viewer's message may not change the stream"
        if call.arguments is None:
            return "error", f"error: {call.error}"
        # Keys the tool does not take are left out: small models copy schema words
        # ("required", "type") into their calls.
        taken = tool.arguments.model_fields
        given = {key: value for key, value in call.arguments.items() if key in taken}
        try:
            arguments = tool.arguments.model_validate(given)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return "error", f"error: bad arguments: {problems}"
        limit = tool.timeout_s if tool.timeout_s is not None else self.timeout_s
        try:
            return "ok", await asyncio.wait_for(tool.run(arguments, ctx), limit)
        except TimeoutError:
            return "timeout", f"error: {tool.name} did not answer within {limit:g} s"
        except ToolError as exc:
            return "error", f"error: {exc}"

    async def _event(
        self,
        ctx: ToolContext,
        call_id: str,
        name: str,
        seq: int,
        *,
        arguments: dict[str, object] | None = None,
        outcome: ToolOutcome | None = None,
        result: str = "",
        elapsed_ms: float | None = None,
    ) -> None:
        error = result[len("error: ") :] if result.startswith("error: ") else ""
        await self.publish(
            ToolEvent(
                session_id=ctx.session_id, turn_id=ctx.turn_id,
                message_id=f"{ctx.turn_id}.tool-{call_id}:{seq}", seq=seq, call_id=call_id,
                tool=name or "unknown", phase="call" if seq == 0 else "result",
                arguments=dict(list((arguments or {}).items())[:16]), outcome=outcome,
                result=result, error=error[:MAX_REASON_CHARS], elapsed_ms=elapsed_ms,
            )
        )  # fmt: skip
