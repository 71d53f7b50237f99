"""Tool-call success: which tool a turn calls for a line, and whether the call works,
through the policy stage, against labelled lines.

    python -m benchmarks.tools [--quick N] [--out PATH] [--max-tokens N]

Data: benchmarks/data/tool_prompts.json (47 lines, each labelled with the tool a good
assistant calls for it, or null). Each line is its own turn in a session of its own, as
chat from one viewer, except the switch_scene lines, which come from the operator
(platform "control_panel": a viewer may not switch scenes). Every stage has long-term
memory (a fresh sqlite-vec store per condition), so remember and recall can work.

Conditions, one after another, on the same lines:
- no tools (the baseline): tools=[]; the bundled model only answers;
- routed (the default for the bundled model): the tool gate picks the tool from the line's
  meaning, the model writes the arguments (LlamaCppBackend.call_tool), the tool runs, then
  the model answers. The first routed call also makes the model's tool context and fills
  it with a tool prompt: reported apart from the steady state;
- native: the bundled model is shown the tools with the reply request and decides itself
  (PolicySettings(tool_calling="native")). The declarations lead the prompt and differ
  between a viewer's turn and the operator's (switch_scene), so the first line and each
  change between them evaluate the prompt anew: reported apart too;
- stand-in: the OpenAI-compatible backend against tests/standins/openai.py, which calls the
  labelled tool with valid arguments when a line matches its label (rules derived from the
  labels). It shows the wire and the stage's plumbing working end to end, not a model's
  judgement: its choice is right by construction;
- gate alone: ToolGate.pick on each line (no LLM): choice accuracy, false calls, misses and
  confusions, and how long a pick takes.

Per line: the tools that ran (from the tool.event results), their outcome (ok; bad
arguments: not JSON or not the tool's schema; tool error: e.g. an expression the persona
lacks; refused; timeout), a false call (a null line that called a tool), time from the
message's delivery to the first token published (what is heard first: the filler line if
a tool is slow) and to the LLM's first reply token, split by tool lines and null lines.

--quick N: N lines spread over the set, tool lines and null lines in its proportions.
Prints markdown tables; writes the figures as JSON (--out). Asserts nothing.
"""

import argparse
import asyncio
import json
import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.cpu_share import OtherLoad
from benchmarks.turn_probe import (
    ProbeBackend,
    machine_load,
    markdown_table,
    open_memory,
    percentile,
    rate,
    run_turn,
    stage_with,
)
from contracts import ChatMessage
from contracts.tools import ToolEvent
from services.bus.harness import StageHarness
from services.memory.embedder import Embedder
from services.memory.settings import MemorySettings
from services.policy.backends import make_backend, routes_tools
from services.policy.settings import PolicySettings
from services.policy.tools.builtin import BUILTIN_TOOLS
from services.policy.tools.gate import ToolGate
from tests.standins.openai import OpenAIStandIn, openai_stand_in
from tests.standins.tool_rules import ToolRule

DATA = Path(__file__).parent / "data" / "tool_prompts.json"
DEFAULT_OUT = Path(".marionette/bench/tools.json")
VIEWER = "tidewatcher"
OPERATOR = "operator"
TRUSTED_TOOLS = {tool.name for tool in BUILTIN_TOOLS if tool.acts_on_stream}
LLM_CONDITIONS = ("no_tools", "routed", "native", "standin")
# Valid arguments for the stand-in's scripted calls, per tool.
STANDIN_ARGUMENTS: dict[str, dict[str, Any]] = {
    "time": {},
    "dice": {"sides": 20},
    "choose": {"options": ["the first", "the second"]},
    "set_expression": {"expression": "happy"},
    "switch_scene": {"scene": "gaming"},
    "remember": {"fact": "what the viewer said"},
    "recall": {"query": "what the viewer told me"},
    "describe_view": {},
}


@dataclass(frozen=True)
class Line:
    id: str
    text: str
    tool: str | None

    @property
    def trusted(self) -> bool:
        """Sent by the operator: only they may use the tools that act on the stream."""
        return self.tool in TRUSTED_TOOLS

    def message(self) -> ChatMessage:
        return ChatMessage(
            session_id=f"tools-{self.id}",
            turn_id="t",
            seq=0,
            platform="control_panel" if self.trusted else "twitch",
            author=OPERATOR if self.trusted else VIEWER,
            text=self.text,
        )


def load_lines(path: Path = DATA) -> list[Line]:
    return [Line(p["id"], p["text"], p["tool"]) for p in json.loads(path.read_text())["prompts"]]


def spread(lines: Sequence[Line], count: int) -> list[Line]:
    """count lines spread over the set (it is sorted by tool), tool lines and null lines
    in the set's proportions (at least one of each); all of them if count covers the set."""
    if count >= len(lines):
        return list(lines)
    tool_lines = [line for line in lines if line.tool is not None]
    null_lines = [line for line in lines if line.tool is None]
    tools_wanted = round(count * len(tool_lines) / len(lines))
    tools_wanted = max(min(tools_wanted, count - 1, len(tool_lines)), min(1, count))

    def evenly(group: Sequence[Line], wanted: int) -> list[Line]:
        return [group[n * len(group) // wanted] for n in range(wanted)] if wanted else []

    return evenly(tool_lines, tools_wanted) + evenly(null_lines, count - tools_wanted)


def outcome_kind(event: ToolEvent) -> str:
    if event.outcome in ("ok", "refused", "timeout"):
        return str(event.outcome)
    if event.result.startswith(("error: bad arguments", "error: arguments ")):
        return "bad_arguments"
    if event.result.startswith("error: there is no tool"):
        return "unknown_tool"
    return "tool_error"


@dataclass
class LineResult:
    id: str
    label: str | None
    tools: list[str]  # the tools that ran, in order
    outcomes: list[str]
    arguments: list[dict[str, Any]]  # as the calls were made
    errors: list[str]  # the results of the calls that failed
    first_token_ms: float | None
    first_llm_ms: float | None
    status: str
    reply: str
    call_tool_ms: list[float] = field(default_factory=list)  # routed: writing the arguments
    # A line whose prompt the model's cache did not hold: routed, the first call (its own
    # context); native, the first line (the reply request declares the tools; the warm-up
    # did not) and each change between a viewer's line and the operator's (switch_scene
    # is declared to the operator only: the declarations, early in the prompt, differ).
    cold_prompt: bool = False

    @property
    def first_tool(self) -> str | None:
        return self.tools[0] if self.tools else None


async def run_condition(
    name: str,
    settings: PolicySettings,
    backend: ProbeBackend,
    lines: Sequence[Line],
    embedder: Embedder,
    folder: Path,
    gate: ToolGate | None = None,
) -> list[LineResult]:
    budget_ms = MemorySettings().recall_budget_ms  # the stage's
    long_term = open_memory(folder / f"{name}.sqlite3", embedder, budget_ms)
    harness = StageHarness(stage_with(settings, backend, long_term, gate))
    await harness.stage.warm_up()
    results: list[LineResult] = []
    native = bool(settings.tools) and gate is None and settings.backend == "llamacpp"
    previous: Line | None = None
    try:
        for line in lines:
            calls_before = len(backend.tool_calls_ms)
            turn = await run_turn(harness, backend, line.message())
            ran = [e for e in turn.events if e.phase == "result"]
            results.append(
                LineResult(
                    id=line.id,
                    label=line.tool,
                    tools=[e.tool for e in ran],
                    outcomes=[outcome_kind(e) for e in ran],
                    arguments=[e.arguments for e in turn.events if e.phase == "call"],
                    errors=[e.result for e in ran if e.outcome != "ok"],
                    first_token_ms=turn.first_token_ms,
                    first_llm_ms=turn.first_llm_ms,
                    status=turn.status,
                    reply=turn.reply,
                    call_tool_ms=backend.tool_calls_ms[calls_before:],
                    cold_prompt=(
                        calls_before == 0 and len(backend.tool_calls_ms) > 0
                        if gate is not None
                        else native and (previous is None or previous.trusted != line.trusted)
                    ),
                )
            )
            previous = line
        print(f"{name}: {len(lines)} lines", flush=True)
        return results
    finally:
        await long_term.close()


def summarize(results: Sequence[LineResult]) -> dict[str, Any]:
    tool_lines = [r for r in results if r.label is not None]
    null_lines = [r for r in results if r.label is None]
    right = [r for r in tool_lines if r.first_tool == r.label]
    succeeded = [r for r in right if r.outcomes[0] == "ok"]
    outcomes = Counter(kind for r in results for kind in r.outcomes)
    steady_tools = [r for r in tool_lines if not r.cold_prompt]
    steady_nulls = [r for r in null_lines if not r.cold_prompt]
    cold = [r for r in results if r.cold_prompt]
    cold_summary = {
        "lines": [r.id for r in cold],
        "first_token_ms_p50": percentile([r.first_token_ms for r in cold], 50),
    }
    calls = [ms for r in results if not r.cold_prompt for ms in r.call_tool_ms]
    return {
        "lines": len(results),
        "tool_lines": len(tool_lines),
        "null_lines": len(null_lines),
        "right_tool": len(right),
        "right_tool_rate": rate(len(right), len(tool_lines)),
        "right_tool_ran_ok": len(succeeded),
        "success_rate": rate(len(succeeded), len(tool_lines)),
        "args_ok_rate": rate(len(succeeded), len(right)),
        "wrong_tool": sum(r.first_tool not in (None, r.label) for r in tool_lines),
        "missed": sum(r.first_tool is None for r in tool_lines),
        "false_calls": sum(r.first_tool is not None for r in null_lines),
        "false_call_rate": rate(sum(r.first_tool is not None for r in null_lines), len(null_lines)),
        "calls": sum(len(r.tools) for r in results),
        "outcomes": dict(outcomes),
        "statuses": dict(Counter(r.status for r in results)),
        "first_token_ms_p50_tool_lines": percentile([r.first_token_ms for r in steady_tools], 50),
        "first_token_ms_p50_null_lines": percentile([r.first_token_ms for r in steady_nulls], 50),
        "first_llm_ms_p50_tool_lines": percentile([r.first_llm_ms for r in steady_tools], 50),
        "first_llm_ms_p50_null_lines": percentile([r.first_llm_ms for r in steady_nulls], 50),
        "call_tool_ms_p50": percentile(calls, 50),
        "cold_prompts": cold_summary,
        "cold_prompt_line": (
            {
                "line": cold[0].id,
                "call_tool_ms": cold[0].call_tool_ms[0] if cold[0].call_tool_ms else None,
                "first_token_ms": cold[0].first_token_ms,
                "first_llm_ms": cold[0].first_llm_ms,
            }
            if cold
            else None
        ),
    }


@dataclass
class GatePick:
    id: str
    label: str | None
    picked: str | None
    ms: float


def run_gate(gate: ToolGate, lines: Sequence[Line]) -> list[GatePick]:
    picks = []
    for line in lines:
        allowed = [t.name for t in BUILTIN_TOOLS if line.trusted or not t.acts_on_stream]
        began = time.perf_counter()
        picked = gate.pick(line.text, allowed)
        picks.append(GatePick(line.id, line.tool, picked, (time.perf_counter() - began) * 1000))
    return picks


def summarize_gate(picks: Sequence[GatePick]) -> dict[str, Any]:
    tool_lines = [p for p in picks if p.label is not None]
    null_lines = [p for p in picks if p.label is None]
    confusions = Counter(
        (p.label or "none", p.picked or "none") for p in picks if p.picked != p.label
    )
    return {
        "lines": len(picks),
        "tool_lines": len(tool_lines),
        "null_lines": len(null_lines),
        "correct": sum(p.picked == p.label for p in picks),
        "accuracy": rate(sum(p.picked == p.label for p in picks), len(picks)),
        "right_tool": sum(p.picked == p.label for p in tool_lines),
        "right_tool_rate": rate(sum(p.picked == p.label for p in tool_lines), len(tool_lines)),
        "wrong_tool": sum(p.picked not in (None, p.label) for p in tool_lines),
        "missed": sum(p.picked is None for p in tool_lines),
        "false_calls": sum(p.picked is not None for p in null_lines),
        "false_call_rate": rate(sum(p.picked is not None for p in null_lines), len(null_lines)),
        "pick_ms_p50": percentile([p.ms for p in picks], 50),
        "confusions": [
            {"label": label, "picked": picked, "count": count}
            for (label, picked), count in confusions.most_common()
        ],
    }


def standin_rules(lines: Sequence[Line]) -> list[ToolRule]:
    """The labelled tool, called with valid arguments, for exactly the labelled lines."""
    return [
        ToolRule.calling(re.escape(line.text), line.tool, STANDIN_ARGUMENTS[line.tool])
        for line in lines
        if line.tool is not None
    ]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    lines = spread(load_lines(), args.quick) if args.quick else load_lines()
    other = OtherLoad()
    other.start()
    started = time.perf_counter()
    embedder = Embedder()
    base = {"max_tokens": args.max_tokens, "retry_backoff_ms": 0}
    bundled = make_backend(PolicySettings(**base))  # one model, shared by the conditions
    await bundled.check()
    gate = await asyncio.to_thread(ToolGate, embedder, BUILTIN_TOOLS)
    # First, while no line's vector is in the embedder's few recent ones (a turn's recall
    # leaves its line's there for its gate): each pick here embeds its line.
    picks = run_gate(gate, lines)
    results: dict[str, list[LineResult]] = {}
    with tempfile.TemporaryDirectory(prefix="marionette-tools-") as folder:
        where = Path(folder)
        plain = PolicySettings(tools=[], **base)
        results["no_tools"] = await run_condition(
            "no_tools", plain, ProbeBackend(bundled), lines, embedder, where
        )
        routed, routed_backend = PolicySettings(**base), ProbeBackend(bundled)
        assert routes_tools(routed, routed_backend), "auto routes tools for llamacpp"
        results["routed"] = await run_condition(
            "routed", routed, routed_backend, lines, embedder, where, gate
        )
        native = PolicySettings(tool_calling="native", **base)
        results["native"] = await run_condition(
            "native", native, ProbeBackend(bundled), lines, embedder, where
        )
        stand_in = OpenAIStandIn(rules=standin_rules(lines), models=set())
        with openai_stand_in(stand_in) as state:
            wire = PolicySettings(backend="openai", base_url=state.url, **base)
            backend = ProbeBackend(make_backend(wire))
            results["standin"] = await run_condition(
                "standin", wire, backend, lines, embedder, where
            )
            rejected = len(state.rejections)
    conditions = {name: summarize(results[name]) for name in LLM_CONDITIONS}
    conditions["standin"]["server_rejections"] = rejected
    conditions["gate"] = summarize_gate(picks)
    settings = PolicySettings(**base)
    return {
        "benchmark": "tools",
        "settings": {
            "lines": len(lines),
            "quick": args.quick,
            "model": settings.model,
            "max_tokens": args.max_tokens,
            "temperature": settings.temperature,
            "threads": settings.threads,
            "tools": list(settings.tools),
            "standin": "OpenAI-compatible stand-in; rules from the labels: plumbing, not "
            "model quality",
        },
        "conditions": conditions,
        "machine": machine_load(other) | {"wall_s": time.perf_counter() - started},
        "lines": {name: [asdict(r) for r in rows] for name, rows in results.items()}
        | {"gate": [asdict(p) for p in picks]},
    }


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def report(document: dict[str, Any]) -> str:
    conditions, settings = document["conditions"], document["settings"]
    names = {
        "no_tools": "no tools (baseline)",
        "routed": "bundled, routed (default)",
        "native": "bundled, native",
        "standin": "stand-in (plumbing)",
    }
    rows = []
    for key, label in names.items():
        c = conditions[key]
        tools = key != "no_tools"
        rows.append(
            [
                label,
                f"{c['right_tool']}/{c['tool_lines']}" if tools else "-",
                c["args_ok_rate"] if tools else None,
                c["success_rate"] if tools else None,
                f"{c['wrong_tool']}/{c['missed']}" if tools else "-",
                f"{c['false_calls']}/{c['null_lines']}" if tools else "-",
                c["first_token_ms_p50_tool_lines"],
                c["first_token_ms_p50_null_lines"],
                c["first_llm_ms_p50_tool_lines"],
                c["first_llm_ms_p50_null_lines"],
            ]
        )
    gate = conditions["gate"]
    routed = conditions["routed"]
    first, native_first = routed["cold_prompt_line"], conditions["native"]["cold_prompt_line"]
    native_cold = conditions["native"]["cold_prompts"]
    confusions = ", ".join(f"{c['label']}->{c['picked']} x{c['count']}" for c in gate["confusions"])
    parts = [
        f"tools: {settings['lines']} lines, {settings['model']}, replies up to "
        f"{settings['max_tokens']} tokens",
        markdown_table(
            (
                "condition",
                "right tool",
                "args ok (of right)",
                "success",
                "wrong/missed",
                "false calls",
                "first token p50 ms, tool lines",
                "first token p50 ms, null lines",
                "LLM first token p50 ms, tool lines",
                "LLM first token p50 ms, null lines",
            ),
            rows,
        ),
        "",
        markdown_table(
            (
                "gate alone",
                "accuracy",
                "right tool",
                "wrong",
                "missed",
                "false calls",
                "pick p50 ms",
            ),
            [
                [
                    "ToolGate.pick",
                    gate["accuracy"],
                    f"{gate['right_tool']}/{gate['tool_lines']}",
                    gate["wrong_tool"],
                    gate["missed"],
                    f"{gate['false_calls']}/{gate['null_lines']}",
                    gate["pick_ms_p50"],
                ]
            ],
        ),
        f"gate confusions (label->picked): {confusions or 'none'}",
        f"outcomes: routed {routed['outcomes']}, native {conditions['native']['outcomes']}, "
        f"stand-in {conditions['standin']['outcomes']} "
        f"(server rejections {conditions['standin']['server_rejections']})",
        "cold prompts (left out of the first-token figures above): routed, first call "
        + (
            f"({first['line']}): call_tool {ms(first['call_tool_ms'])}, first token "
            f"{ms(first['first_token_ms'])}, LLM first token {ms(first['first_llm_ms'])}"
            if first
            else "none"
        )
        + f"; later calls p50 {ms(routed['call_tool_ms_p50'])}"
        + (
            f"; native, {len(native_cold['lines'])} lines (the first, and each change between "
            f"viewer and operator): first token p50 {ms(native_cold['first_token_ms_p50'])}"
            if native_first
            else ""
        ),
        f"machine: load average {document['machine']['load_average']}, other cores busy "
        f"{document['machine']['other_cores']}",
    ]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", type=int, metavar="N", help="N lines spread over the set")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON figures")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=PolicySettings().max_tokens,
        help="longest reply (default: the stage's)",
    )
    args = parser.parse_args(argv)
    document = asyncio.run(bench(args))
    print(report(document))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
