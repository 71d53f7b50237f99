"""Long-term memory recall: facts told in an earlier session, asked about in a later one,
with long-term memory on and off (the baseline), through the policy stage and the bundled
LLM (qwen2.5-0.5b).

    python -m benchmarks.recall [--quick N] [--out PATH] [--max-tokens N] [--budget-ms MS]

Data: benchmarks/data/recall.json (40 cases; its "about" says what each field means).

Per case, in a memory of its own (sqlite-vec in a temporary folder, the real embedder):
- the earlier session: the case's lines (filler, the stated fact, and for distractor cases
  other viewers' lines on the same topic) go through a PolicyStage with long-term memory
  on, as chat turns in session `earlier-<id>` (the streamer's as speech; an NPC's player's
  as chat to the persona file "grumpy", the only bundled NPC, in session `grumpy:<player>`).
  Its LLM is scripted: what a turn learns does not depend on the reply. Tools are off there
  and summaries never run (so no episode is kept: only the facts the lines state count);
- the question: asked by the same speaker in a new session (`later-<id>`; an NPC's is the
  player's session again, since an NPC remembers per player, with its short-term memory
  gone, as on a visit after the memory window) with the real LLM, once with long-term
  memory on and once with it off (no long_term: the baseline), same seed, each after the
  persona's prefix is put in the model's cache, every other case off first. Tools are off
  for the question (the recall tool would also search memory; benchmarks.tools measures
  it). Snapshots of short-term memory are off: only long-term memory carries the fact.

Figures per condition: retrieval hit (the stated fact is in the prompt's memory message),
answer recall (a reply with any answer keyword, case-insensitive; a number only as a whole
number), for distractor cases the wrong-viewer answers (another speaker's keyword) and the
right-viewer rate (right keyword, no wrong one); time to the first token the turn published
(from the message's delivery) and to the LLM's first token; prompt tokens. Added by memory:
the recall's own time (what the turn waits for `TurnMemory.recall`; p50/p95), recalls over
the budget, prompt tokens added. Also, without the LLM: retrieval with every case's earlier
session in one memory (as the live character's memory is shared by all its sessions), and
the lines the tool gate would send to a tool in a live stage (a fact line that calls a tool
is not kept as a fact).

Prints markdown tables; writes the figures as JSON (--out). Asserts nothing.
"""

import argparse
import asyncio
import json
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.cpu_share import OtherLoad
from benchmarks.turn_probe import (
    ProbeBackend,
    machine_load,
    mean,
    open_memory,
    percentile,
    rate,
    run_turn,
    stage_with,
    table,
)
from contracts import AsrFinal, ChatMessage
from contracts.envelope import Envelope
from services.bus.harness import StageHarness
from services.memory.embedder import Embedder
from services.memory.long_term import LongTermMemory
from services.memory.settings import MemorySettings
from services.policy.backends import (
    Generation,
    Messages,
    complete,
    make_backend,
)
from services.policy.long_term import MEMORY_HEADER, TurnMemory
from services.policy.memory import Memory
from services.policy.settings import PolicySettings
from services.policy.stage import WARM_UP
from services.policy.tools.builtin import BUILTIN_TOOLS
from services.policy.tools.gate import ToolGate
from services.policy.tools.wire import ToolCall, ToolSpecs
from services.telemetry.metrics import REGISTRY

DATA = Path(__file__).parent / "data" / "recall.json"
DEFAULT_OUT = Path(".marionette/bench/recall.json")
MEMORY_LINE = MEMORY_HEADER
NPC_PERSONA = "grumpy"  # the only bundled persona file besides the live one
LIVE_PERSONA = "Mari"  # the bundled live persona's name: its character scope
VIEWER_PLATFORM = "twitch"


class ScriptedReplies:
    """The earlier sessions' LLM: the same short reply to every line, since what a turn
    learns (the line itself) does not depend on what the character answered."""

    name = "scripted"

    async def check(self) -> None:
        pass

    async def stream(
        self,
        messages: Messages,
        options: Generation,
        prefix: str = "",
        tools: ToolSpecs | None = None,
    ) -> AsyncIterator[str | ToolCall]:
        for piece in ("[happy]", " Oh", " nice,", " thanks", " for", " telling", " me!"):
            yield piece


# --- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    speaker: str | None  # None: the streamer, by voice
    npc: bool
    stated: list[str]
    filler: list[str]
    question: str
    answer_keywords: list[str]
    distractor: bool
    others: list[tuple[str, str]]  # (speaker, line)
    wrong_keywords: list[str]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> "Case":
        return cls(
            id=raw["id"],
            speaker=raw["speaker"],
            npc=raw["persona_scope"] == "npc",
            stated=list(raw["stated"]),
            filler=list(raw["filler"]),
            question=raw["question"],
            answer_keywords=list(raw["answer_keywords"]),
            distractor=bool(raw["distractor"]),
            others=[(o["speaker"], o["line"]) for o in raw.get("others", [])],
            wrong_keywords=list(raw.get("wrong_keywords", [])),
        )

    @property
    def group(self) -> str:
        if self.distractor:
            return "distractor"
        if self.npc:
            return "npc"
        return "streamer" if self.speaker is None else "viewer"

    def earlier_lines(self) -> list[tuple[str | None, str]]:
        """The earlier session, in order: a filler line first, then the fact among the
        other speakers' lines, then the rest of the filler."""
        said = [(self.speaker, line) for line in self.stated]
        filler = [(self.speaker, line) for line in self.filler]
        others: list[tuple[str | None, str]] = list(self.others)
        return filler[:1] + others[:1] + said + filler[1:2] + others[1:] + filler[2:]

    def session(self, when: str) -> str:
        if self.npc:
            return f"{NPC_PERSONA}:{self.speaker}"
        return f"{when}-{self.id}"

    def message(self, author: str | None, text: str, session: str, turn: str) -> Envelope:
        if author is None:  # the streamer talks; speech has no author
            return AsrFinal(
                session_id=session,
                turn_id=turn,
                seq=0,
                text=text,
                confidence=1.0,
                speech_start_s=0.0,
                speech_end_s=1.0,
            )
        return ChatMessage(
            session_id=session,
            turn_id=turn,
            seq=0,
            platform=VIEWER_PLATFORM,
            author=author,
            text=text,
            persona=NPC_PERSONA if self.npc else None,
        )

    @staticmethod
    def found(text: str, keywords: Sequence[str]) -> bool:
        """Any keyword in the text, case-insensitive; a number only as a whole number
        ("30" is not in "300" or "2030")."""
        for keyword in keywords:
            pattern = re.escape(keyword)
            if keyword.isdigit():
                pattern = rf"(?<!\d){pattern}(?!\d)"
            if re.search(pattern, text, re.IGNORECASE):
                return True
        return False


def load_cases(path: Path = DATA) -> list[Case]:
    return [Case.of(raw) for raw in json.loads(path.read_text())["cases"]]


# --- memory, timed --------------------------------------------------------------------------


def over_budget_count() -> float:
    return (
        REGISTRY.get_sample_value("marionette_memory_recall_total", {"result": "over_budget"})
        or 0.0
    )


class TimedTurnMemory(TurnMemory):
    """TurnMemory with each recall timed: what a turn waits for memory."""

    def __init__(self, memory: LongTermMemory) -> None:
        super().__init__(memory)
        self.recalls_ms: list[float] = []
        self.over_budget = 0

    async def recall(self, scopes: Sequence[str], text: str, author: str | None) -> str | None:
        before = over_budget_count()
        began = time.perf_counter()
        try:
            return await super().recall(scopes, text, author)
        finally:
            self.recalls_ms.append((time.perf_counter() - began) * 1000)
            self.over_budget += int(over_budget_count() - before)


def memory_message(prompt: Messages | None) -> str | None:
    for message in prompt or []:
        if message["role"] == "system" and str(message["content"]).startswith(MEMORY_LINE):
            return str(message["content"])
    return None


# --- the benchmark ----------------------------------------------------------------------------


@dataclass
class Asked:
    """One question turn, in one condition."""

    reply: str
    status: str
    retrieved: bool  # the stated fact was in the prompt's memory message
    retrieved_first: bool  # ... as the first memory
    memories: int  # memories in the prompt
    answered: bool
    wrong_viewer: bool
    first_token_ms: float | None
    first_llm_ms: float | None
    prompt_tokens: int | None
    recall_ms: float | None
    over_budget: bool


@dataclass
class CaseResult:
    id: str
    group: str
    learned_items: int
    fact_kept: bool  # the stated line is among what the earlier session left in memory
    facts_sent_to_a_tool: dict[str, str] = field(default_factory=dict)  # line -> the tool
    question_sent_to: str | None = None  # the tool the gate picks for the question
    pooled_retrieved: bool = False  # at the stage's threshold and limit
    pooled_rank: int | None = None  # of the stated fact, in the pooled memory's ranking
    pooled_score: float | None = None
    on: Asked | None = None
    off: Asked | None = None


async def feed_earlier(case: Case, memories: Sequence[LongTermMemory]) -> None:
    """The earlier session, through a stage with each memory (scripted replies)."""
    settings = PolicySettings(tools=[], summary_every=200, retry_backoff_ms=0)
    for long_term in memories:
        harness = StageHarness(stage_with(settings, ScriptedReplies(), long_term))
        for number, (author, line) in enumerate(case.earlier_lines()):
            await harness.send(case.message(author, line, case.session("earlier"), f"e{number}"))


async def ask(
    case: Case, backend: ProbeBackend, long_term: LongTermMemory | None, settings: PolicySettings
) -> Asked:
    harness = StageHarness(stage_with(settings, backend, long_term))
    timed: TimedTurnMemory | None = None
    if long_term is not None:
        timed = harness.stage.turn_memory = TimedTurnMemory(long_term)
    # The persona's prefix in the model's cache first, as the live stage keeps it: neither
    # condition pays for the other's (or the previous case's) persona.
    persona = await harness.stage.persona_for(NPC_PERSONA if case.npc else None)
    await complete(backend, harness.stage.prompt(persona, Memory(), None), WARM_UP)
    turn = await run_turn(
        harness, backend, case.message(case.speaker, case.question, case.session("later"), "q")
    )
    memory = memory_message(turn.prompt) or ""
    listed = [line for line in memory.splitlines() if line.startswith("- ")]
    stated = [s.strip() for s in case.stated]
    return Asked(
        reply=turn.reply,
        status=turn.status,
        retrieved=any(s in memory for s in stated),
        retrieved_first=bool(listed) and any(s in listed[0] for s in stated),
        memories=len(listed),
        answered=case.found(turn.reply, case.answer_keywords),
        wrong_viewer=case.distractor and case.found(turn.reply, case.wrong_keywords),
        first_token_ms=turn.first_token_ms,
        first_llm_ms=turn.first_llm_ms,
        prompt_tokens=backend.prompt_tokens(turn.prompt) if turn.prompt else None,
        recall_ms=timed.recalls_ms[-1] if timed and timed.recalls_ms else None,
        over_budget=bool(timed and timed.over_budget),
    )


def gate_picks(gate: ToolGate, case: Case) -> tuple[dict[str, str], str | None]:
    """What a live stage's tool gate does with the case's fact lines and its question."""
    trusted = case.speaker is None  # the streamer's voice may use every tool
    allowed = [t.name for t in BUILTIN_TOOLS if trusted or not t.acts_on_stream]
    facts = {line: gate.pick(line, allowed) for line in case.stated}
    return {k: v for k, v in facts.items() if v}, gate.pick(case.question, allowed)


async def run_case(
    index: int,
    case: Case,
    backend: ProbeBackend,
    embedder: Embedder,
    pooled: LongTermMemory,
    gate: ToolGate,
    folder: Path,
    args: argparse.Namespace,
) -> CaseResult:
    long_term = open_memory(folder / f"{case.id}.sqlite3", embedder, args.budget_ms)
    try:
        await feed_earlier(case, [long_term, pooled])
        scopes = TurnMemory(long_term).scopes(
            case.session("later"), NPC_PERSONA if case.npc else None, LIVE_PERSONA
        )
        kept = [item.text for scope in scopes for item in await long_term.export(scope)]
        fact_kept = any(s.strip() in text for s in case.stated for text in kept)
        result = CaseResult(case.id, case.group, len(kept), fact_kept)
        settings = PolicySettings(tools=[], max_tokens=args.max_tokens, retry_backoff_ms=0)
        # Every other case asks without memory first: neither condition always goes first.
        if index % 2:
            result.off = await ask(case, backend, None, settings)
        result.on = await ask(case, backend, long_term, settings)
        if not index % 2:
            result.off = await ask(case, backend, None, settings)
        # After the question: the embedder keeps its last few sentences' vectors (a turn's
        # recall and its tool gate share one), so a pick before would make the recall's
        # embedding free.
        result.facts_sent_to_a_tool, result.question_sent_to = gate_picks(gate, case)
        return result
    finally:
        await long_term.close()


async def pooled_retrieval(
    cases: Sequence[Case], results: Sequence[CaseResult], pooled: LongTermMemory
) -> None:
    """Retrieval alone (no LLM, no budget) with every earlier session in one memory: the
    stated fact's score (with the asker's bonus, as a turn ranks it) and rank among
    everything in the scope, so other thresholds can be read off."""
    settings = pooled.settings
    unfiltered = settings.model_copy(update={"recall_min_score": -1.0})
    memory = LongTermMemory(pooled.store, pooled.embedder, unfiltered)
    for case, result in zip(cases, results, strict=True):
        npc = NPC_PERSONA if case.npc else None
        scopes = TurnMemory(memory).scopes(case.session("later"), npc, LIVE_PERSONA)
        found = await memory.recall(scopes, case.question, author=case.speaker, limit=50)
        for rank, hit in enumerate(found.hits):
            if any(s.strip() in hit.item.text for s in case.stated):
                result.pooled_rank, result.pooled_score = rank, hit.score
                break
        result.pooled_retrieved = (
            result.pooled_rank is not None
            and result.pooled_rank < settings.recall_limit
            and (result.pooled_score or 0) >= settings.recall_min_score
        )


def pooled_figures(results: Sequence[CaseResult], settings: MemorySettings) -> dict[str, Any]:
    def hits(min_score: float, limit: int) -> int:
        return sum(
            r.pooled_rank is not None
            and r.pooled_rank < limit
            and (r.pooled_score or 0) >= min_score
            for r in results
        )

    return {
        "cases": len(results),
        "hits": hits(settings.recall_min_score, settings.recall_limit),
        "rate": rate(sum(r.pooled_retrieved for r in results), len(results)),
        "fact_score_p50": percentile([r.pooled_score for r in results], 50),
        "fact_first": hits(-1.0, 1),
        "hits_by_min_score": {
            f"{score:.2f}": hits(score, settings.recall_limit) for score in (0.4, 0.3, 0.2, -1.0)
        },
    }


def summarize(
    results: Sequence[CaseResult], pick: Callable[[CaseResult], Asked | None]
) -> dict[str, Any]:
    asked = [a for a in map(pick, results) if a is not None]
    distractors = [
        a
        for r, a in zip(results, map(pick, results), strict=True)
        if a is not None and r.group == "distractor"
    ]
    right = [a for a in distractors if a.answered and not a.wrong_viewer]
    return {
        "cases": len(asked),
        "retrieval_hits": sum(a.retrieved for a in asked),
        "retrieval_hit_rate": rate(sum(a.retrieved for a in asked), len(asked)),
        "retrieved_first": sum(a.retrieved_first for a in asked),
        "answered": sum(a.answered for a in asked),
        "answer_recall": rate(sum(a.answered for a in asked), len(asked)),
        "distractor_cases": len(distractors),
        "wrong_viewer": sum(a.wrong_viewer for a in distractors),
        "wrong_viewer_rate": rate(sum(a.wrong_viewer for a in distractors), len(distractors)),
        "right_viewer": len(right),
        "right_viewer_rate": rate(len(right), len(distractors)),
        "first_token_ms_p50": percentile([a.first_token_ms for a in asked], 50),
        "first_token_ms_p95": percentile([a.first_token_ms for a in asked], 95),
        "first_llm_ms_p50": percentile([a.first_llm_ms for a in asked], 50),
        "prompt_tokens_mean": mean([a.prompt_tokens for a in asked]),
        "statuses": {s: sum(a.status == s for a in asked) for s in {a.status for a in asked}},
    }


def added_cost(results: Sequence[CaseResult]) -> dict[str, Any]:
    pairs = [(r.on, r.off) for r in results if r.on is not None and r.off is not None]
    added_tokens = [
        on.prompt_tokens - off.prompt_tokens
        for on, off in pairs
        if on.prompt_tokens is not None and off.prompt_tokens is not None
    ]
    deltas = [
        on.first_token_ms - off.first_token_ms
        for on, off in pairs
        if on.first_token_ms is not None and off.first_token_ms is not None
    ]
    recalls = [on.recall_ms for on, _ in pairs]
    recalled = [
        (on, off) for on, off in pairs if on.memories and on.first_token_ms and off.first_token_ms
    ]
    return {
        "recall_ms_p50": percentile(recalls, 50),
        "recall_ms_p95": percentile(recalls, 95),
        "recall_ms_max": max((r for r in recalls if r is not None), default=None),
        "over_budget": sum(on.over_budget for on, _ in pairs),
        "first_token_ms_p50_added": percentile(deltas, 50),
        "prompt_tokens_added_mean": mean(added_tokens),
        "prompt_tokens_added_max": max(added_tokens, default=None),
        "turns_with_memories": len(recalled),
        "first_token_ms_p50_added_with_memories": percentile(
            [(on.first_token_ms or 0) - (off.first_token_ms or 0) for on, off in recalled], 50
        ),
        "first_llm_ms_p50_added_with_memories": percentile(
            [(on.first_llm_ms or 0) - (off.first_llm_ms or 0) for on, off in recalled], 50
        ),
        "prompt_tokens_added_mean_with_memories": mean(
            [(on.prompt_tokens or 0) - (off.prompt_tokens or 0) for on, off in recalled]
        ),
    }


CONDITION_COLUMNS = {
    "cases": "cases",
    "retrieval hit": "retrieval_hit_rate",
    "answer recall": "answer_recall",
    "wrong viewer": "wrong_viewer",
    "right viewer": "right_viewer",
    "of distractors": "distractor_cases",
    "first token p50 ms": "first_token_ms_p50",
    "first token p95 ms": "first_token_ms_p95",
    "LLM first token p50 ms": "first_llm_ms_p50",
    "prompt tokens (mean)": "prompt_tokens_mean",
}
ADDED_COLUMNS = {
    "recall p50 ms": "recall_ms_p50",
    "recall p95 ms": "recall_ms_p95",
    "over budget": "over_budget",
    "first token added p50 ms": "first_token_ms_p50_added",
    "prompt tokens added (mean)": "prompt_tokens_added_mean",
    "prompt tokens added (max)": "prompt_tokens_added_max",
    "turns given memories": "turns_with_memories",
    "of those: first token added p50 ms": "first_token_ms_p50_added_with_memories",
    "of those: LLM first token added p50 ms": "first_llm_ms_p50_added_with_memories",
    "of those: prompt tokens added (mean)": "prompt_tokens_added_mean_with_memories",
}
GROUP_COLUMNS = {
    "cases": "cases",
    "facts kept": "facts_kept",
    "retrieval hit (on)": "retrieval_hit_rate",
    "answer recall (on)": "answer_recall_on",
    "answer recall (off)": "answer_recall_off",
    "retrieval, all sessions in one memory": "pooled_retrieval_rate",
}


def report(document: dict[str, Any]) -> str:
    conditions, settings = document["conditions"], document["settings"]
    kept, gate, machine = document["facts_kept"], document["gate"], document["machine"]
    pooled = document["pooled_retrieval"]
    return "\n".join(
        [
            f"recall: {settings['cases']} cases, {settings['model']} (question turns), earlier "
            f"sessions with scripted replies; recall budget {settings['budget_ms']:g} ms, "
            f"replies up to {settings['max_tokens']} tokens",
            table(
                "condition",
                CONDITION_COLUMNS,
                {
                    "memory off (baseline)": conditions["memory_off"],
                    "memory on": conditions["memory_on"],
                },
            ),
            "",
            table("added by memory", ADDED_COLUMNS, {"memory on": document["added_by_memory"]}),
            "",
            table("group", GROUP_COLUMNS, document["by_group"]),
            "",
            f"all sessions in one memory: the fact's score p50 {pooled['fact_score_p50']:.2f}, "
            f"ranked first {pooled['fact_first']}/{pooled['cases']}; in the top "
            f"{MemorySettings().recall_limit} at min score: {pooled['hits_by_min_score']}",
            f"facts kept by the earlier sessions: {kept['kept']}/{kept['cases']}; not kept: "
            f"{kept['not_kept']}",
            f"gate (a live stage with tools): {gate['facts_sent_to_a_tool']} fact lines would "
            f"call a tool (and not be kept as facts); questions it sends to a tool: "
            f"{gate['questions_sent_to']}",
            f"machine: load average {machine['load_average']}, other cores busy "
            f"{machine['other_cores']}, {machine['wall_s']:.0f} s",
        ]
    )


def by_group(results: Sequence[CaseResult]) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for name in ("viewer", "streamer", "npc", "distractor", "all"):
        mine = [r for r in results if name in ("all", r.group)]
        if not mine:
            continue
        on = [r.on for r in mine if r.on is not None]
        off = [r.off for r in mine if r.off is not None]
        groups[name] = {
            "cases": len(mine),
            "facts_kept": sum(r.fact_kept for r in mine),
            "retrieval_hit_rate": rate(sum(a.retrieved for a in on), len(on)),
            "answer_recall_on": rate(sum(a.answered for a in on), len(on)),
            "answer_recall_off": rate(sum(a.answered for a in off), len(off)),
            "pooled_retrieval_rate": rate(sum(r.pooled_retrieved for r in mine), len(mine)),
        }
    return groups


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    cases = load_cases()[: args.quick] if args.quick else load_cases()
    other = OtherLoad()
    other.start()
    started = time.perf_counter()
    embedder = Embedder()
    llm_settings = PolicySettings(max_tokens=args.max_tokens)
    backend = ProbeBackend(make_backend(llm_settings))
    await backend.check()
    gate = await asyncio.to_thread(ToolGate, embedder, BUILTIN_TOOLS)
    results: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="marionette-recall-") as folder:
        pooled = open_memory(Path(folder) / "pooled.sqlite3", embedder, args.budget_ms)
        try:
            for index, case in enumerate(cases):
                result = await run_case(
                    index, case, backend, embedder, pooled, gate, Path(folder), args
                )
                results.append(result)
                print(
                    f"{case.id}: on {'hit' if result.on and result.on.answered else 'miss'}, "
                    f"off {'hit' if result.off and result.off.answered else 'miss'}",
                    flush=True,
                )
            await pooled_retrieval(cases, results, pooled)
        finally:
            await pooled.close()
    routed_questions: dict[str, int] = {}
    for r in results:
        if r.question_sent_to:
            routed_questions[r.question_sent_to] = routed_questions.get(r.question_sent_to, 0) + 1
    return {
        "benchmark": "recall",
        "settings": {
            "cases": len(cases),
            "quick": args.quick,
            "model": llm_settings.model,
            "backend": backend.name,
            "max_tokens": args.max_tokens,
            "budget_ms": args.budget_ms,
            "temperature": llm_settings.temperature,
            "threads": llm_settings.threads,
            "earlier_sessions": "scripted replies; tools off; no summaries",
            "question": "real LLM; tools off; same seed in both conditions",
        },
        "conditions": {
            "memory_off": summarize(results, lambda r: r.off),
            "memory_on": summarize(results, lambda r: r.on),
        },
        "added_by_memory": added_cost(results),
        "by_group": by_group(results),
        "facts_kept": {
            "kept": sum(r.fact_kept for r in results),
            "cases": len(results),
            "not_kept": [r.id for r in results if not r.fact_kept],
        },
        "pooled_retrieval": pooled_figures(results, MemorySettings()),
        "gate": {
            "facts_sent_to_a_tool": sum(len(r.facts_sent_to_a_tool) for r in results),
            "questions_sent_to": routed_questions,
        },
        "machine": machine_load(other) | {"wall_s": time.perf_counter() - started},
        "cases": [asdict(r) for r in results],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", type=int, metavar="N", help="only the first N cases")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON figures")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=PolicySettings().max_tokens,
        help="longest reply (default: the stage's)",
    )
    parser.add_argument(
        "--budget-ms",
        type=float,
        default=MemorySettings().recall_budget_ms,
        help="recall budget (default: the stage's)",
    )
    args = parser.parse_args(argv)
    document = asyncio.run(bench(args))
    print(report(document))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
