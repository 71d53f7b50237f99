"""Measuring policy turns for the benchmarks (recall, tools): the stage in memory
(StageHarness) with a backend whose requests are recorded, and when each turn's first
token went out; small figures and table helpers."""

import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cpu_share import OtherLoad
from contracts import PolicyToken
from contracts.envelope import Envelope
from contracts.tools import ToolEvent
from contracts.topics import Topic
from services.bus.harness import MemoryBus, StageHarness
from services.memory.embedder import Embedder
from services.memory.long_term import LongTermMemory
from services.memory.settings import MemorySettings
from services.memory.sqlite_store import SqliteVecStore
from services.policy.backends import (
    BackendFailed,
    ChatBackend,
    Generation,
    LlamaCppBackend,
    Messages,
    ToolCaller,
)
from services.policy.settings import PolicySettings
from services.policy.stage import SUMMARY_PROMPT, WARM_UP, PolicyStage
from services.policy.tools.gate import ToolGate
from services.policy.tools.wire import ToolCall, ToolSpecs


class TimedList(list[tuple[Topic[Any], Envelope]]):
    """The harness's record of what the stage published, with when each went out."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: tuple[Topic[Any], Envelope]) -> None:
        self.times.append(time.perf_counter())
        super().append(item)


@dataclass
class Request:
    messages: Messages
    options: Generation
    tools: ToolSpecs | None
    asked_at: float
    first_piece_at: float | None = None

    @property
    def is_reply(self) -> bool:
        """A turn's reply (not a warm-up, a summary, or other work aside)."""
        return (
            self.options != WARM_UP
            and not self.options.aside
            and self.messages[0]["content"] != SUMMARY_PROMPT
        )


class ProbeBackend:
    """A backend as it is, with every request and the time of its first piece recorded."""

    def __init__(self, inner: ChatBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.requests: list[Request] = []
        self.tool_calls_ms: list[float] = []  # call_tool (routed tool calling), each call

    async def check(self) -> None:
        await self.inner.check()

    async def stream(
        self,
        messages: Messages,
        options: Generation,
        prefix: str = "",
        tools: ToolSpecs | None = None,
    ) -> AsyncIterator[str | ToolCall]:
        request = Request(messages, options, tools, time.perf_counter())
        self.requests.append(request)
        offered = {"tools": tools} if tools else {}
        async for piece in self.inner.stream(messages, options, prefix, **offered):
            if isinstance(piece, str) and piece and request.first_piece_at is None:
                request.first_piece_at = time.perf_counter()
            yield piece

    async def call_tool(
        self, messages: Messages, tools: ToolSpecs, name: str, options: Generation
    ) -> ToolCall:
        if not isinstance(self.inner, ToolCaller):
            raise BackendFailed(f"{self.inner.name} cannot write a chosen call")
        began = time.perf_counter()
        try:
            return await self.inner.call_tool(messages, tools, name, options)
        finally:
            self.tool_calls_ms.append((time.perf_counter() - began) * 1000)

    def prompt_tokens(self, messages: Messages) -> int | None:
        """The prompt's length in tokens as the embedded model renders it (None for other
        backends: their server renders it)."""
        if not isinstance(self.inner, LlamaCppBackend):
            return None
        tokens, _ = self.inner._prompt(messages, "", 1)  # the exact rendering a turn gets
        return len(tokens)


@dataclass
class TurnRecord:
    reply: str
    status: str
    first_token_ms: float | None  # delivery to the first token published (what is heard)
    first_llm_ms: float | None  # delivery to the LLM's first piece of the reply
    prompt: Messages | None  # the first reply request's messages
    events: list[ToolEvent]


async def run_turn(
    harness: StageHarness[PolicyStage], backend: ProbeBackend, message: Envelope
) -> TurnRecord:
    """Deliver one turn's message and measure it."""
    published = harness.stored.published
    if not isinstance(published, TimedList):
        published = harness.stored.published = TimedList()
    before, asked_before = len(published), len(backend.requests)
    began = time.perf_counter()
    await harness.send(message)
    first_at: float | None = None
    reply, status = "", "none"
    events: list[ToolEvent] = []
    for (_, sent), at in zip(published[before:], published.times[before:], strict=True):
        if isinstance(sent, ToolEvent):
            events.append(sent)
        if not isinstance(sent, PolicyToken) or sent.turn_id != message.turn_id:
            continue
        if first_at is None and (sent.text.strip() or sent.final):
            first_at = at
        if sent.final:
            reply, status = sent.reply_text or "", sent.status or "none"
    replies = [r for r in backend.requests[asked_before:] if r.is_reply]
    first_piece = next((r.first_piece_at for r in replies if r.first_piece_at), None)
    return TurnRecord(
        reply=reply,
        status=status,
        first_token_ms=None if first_at is None else (first_at - began) * 1000,
        first_llm_ms=None if first_piece is None else (first_piece - began) * 1000,
        prompt=replies[0].messages if replies else None,
        events=events,
    )


def percentile(values: Sequence[float | None], q: float) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.percentile(present, q)) if present else None


def mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def rate(count: int, total: int) -> float | None:
    return count / total if total else None


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_load(other: OtherLoad) -> dict[str, Any]:
    return {"load_average": list(os.getloadavg()), "other_cores": other.cores()}


def stage_with(
    settings: PolicySettings,
    backend: ChatBackend,
    long_term: LongTermMemory | None,
    gate: ToolGate | None = None,
) -> Callable[[MemoryBus], PolicyStage]:
    def build(bus: MemoryBus) -> PolicyStage:
        return PolicyStage(settings, backend, bus, long_term, gate)

    return build


def open_memory(path: Path, embedder: Embedder, budget_ms: float) -> LongTermMemory:
    settings = MemorySettings(path=path, snapshots=False, recall_budget_ms=budget_ms)
    return LongTermMemory(SqliteVecStore(path, embedder.dimensions), embedder, settings)


def table(first: str, columns: dict[str, str], rows: dict[str, dict[str, Any]]) -> str:
    """A markdown table: a row per named figures, a column per figure."""
    cells = [[name, *(figures[key] for key in columns.values())] for name, figures in rows.items()]
    return markdown_table([first, *columns], cells)
