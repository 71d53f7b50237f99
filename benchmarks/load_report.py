"""The load benchmark's results (benchmarks/load.py): figures per case, markdown, JSON."""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from benchmarks.figures import nan_to_none
from benchmarks.load_watch import ProcessUse, Waiting

KINDS = ("chat", "dialogue", "voice")
FIRST_AUDIO = {
    "chat": "POST /api/chat -> 1st tts.chunk with audio",
    "dialogue": "POST /api/dialogue/stream -> 1st SSE sentence",
    "voice": "end of speech (asr.final) -> 1st tts.chunk with audio",
}
STAGE_ORDER = ("policy", "tts", "asr", "gateway", "redis", "llm-server")


@dataclass
class TurnResult:
    session: str
    turn_id: str = ""
    sent_at: float = math.nan
    """Unix s: the request (chat, dialogue) or the end of speech (voice)."""
    first_audio_ms: float = math.nan
    """From sent_at to the first audio (chat, voice) or the first SSE sentence (dialogue)."""
    done_at: float = math.nan
    """Unix s: the reply's final tts.chunk (chat, voice) or its final SSE event (dialogue)."""
    status: str = "ok"
    reply: str = ""
    policy_status: str | None = None
    client_first_block_ms: float = math.nan
    """voice: from the end of speech to the first reply audio block at the client."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class CaseResult:
    kind: str
    n: int
    """Concurrent sessions (chat, voice) or NPC conversations (dialogue)."""
    turns: list[TurnResult] = field(default_factory=list)
    started_at: float = math.nan
    processes: dict[str, ProcessUse] = field(default_factory=dict)
    backlog: dict[str, Waiting] = field(default_factory=dict)
    settled: bool = True
    """Nothing waited in any stage afterwards (else the next case began with work left)."""
    generations_at_once: int = 0
    slots_at_once: int | None = None
    restarts: int = 0

    @property
    def ok_turns(self) -> list[TurnResult]:
        return [t for t in self.turns if t.ok]

    @property
    def wall_s(self) -> float:
        """From the first input to the last reply done."""
        ends = [t.done_at for t in self.ok_turns]
        return max(ends) - self.started_at if ends else math.nan

    @property
    def turns_per_min(self) -> float:
        return len(self.ok_turns) / self.wall_s * 60 if self.ok_turns else math.nan

    @property
    def s_per_turn(self) -> float:
        return self.wall_s / len(self.ok_turns) if self.ok_turns else math.nan

    @property
    def cpu_s(self) -> float:
        return sum(use.cpu_s for use in self.processes.values())

    @property
    def cpu_per_turn(self) -> float:
        return self.cpu_s / len(self.ok_turns) if self.ok_turns else math.nan

    def first_audio(self, q: float) -> float:
        return rank([t.first_audio_ms for t in self.ok_turns], q)

    def by_stage(self) -> dict[str, ProcessUse]:
        """Replicas (policy-1, policy-2) added up under their stage."""
        stages: dict[str, ProcessUse] = {}
        for name, use in self.processes.items():
            stage = name.rsplit("-", 1)[0] if name[-1].isdigit() and "-" in name else name
            total = stages.setdefault(stage, ProcessUse())
            total.cpu_s = round(total.cpu_s + use.cpu_s, 2)
            total.peak_rss_mb = round(total.peak_rss_mb + use.peak_rss_mb, 1)
        return stages


def rank(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of the finite values; NaN if none."""
    ordered = sorted(v for v in values if math.isfinite(v))
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class ConfigResult:
    """One set of stages: a policy backend and a replica count for policy and tts."""

    backend: str
    replicas: int
    slots: int | None
    """Parallel slots the LLM server was started with (None: the embedded model)."""
    cases: list[CaseResult] = field(default_factory=list)
    startup_s: float = math.nan
    seconds: float = math.nan
    """From the start of the stages to the end of the last case."""
    load_average: list[float] = field(default_factory=list)
    """The machine's (1, 5, 15 min) when the last case ended: others' work shows here."""

    def baseline(self, case: CaseResult) -> CaseResult | None:
        """The same kind of case with one session, measured in the same run."""
        return next((c for c in self.cases if c.kind == case.kind and c.n == 1), None)


def ratio(value: float, base: float) -> float:
    return value / base if math.isfinite(value) and math.isfinite(base) and base else math.nan


def cell(value: float, digits: int = 0) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.{digits}f}"


def times(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2f}x"


def waiting(case: CaseResult, stages: Sequence[str]) -> str:
    """lag/pending at most, per stage."""
    return " ".join(
        f"{w.lag}/{w.pending}" for s in stages if (w := case.backlog.get(s)) is not None
    )


def markdown(configs: Sequence[ConfigResult]) -> str:
    """Two tables: the figures per case, and CPU and memory per stage per case."""
    stages = [s for s in ("policy", "tts", "asr") if any(s in c.backlog for g in configs
                                                         for c in g.cases)]  # fmt: skip
    lines = [
        "| backend | replicas | case | N | ok | turns/min | first audio p50 ms | p95 ms "
        f"| s/turn | vs N=1 | CPU s/turn | vs N=1 | LLM at once | lag/pending max "
        f"({', '.join(stages)}) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for config in configs:
        for case in config.cases:
            base = config.baseline(case)
            at_once = str(case.generations_at_once)
            if case.slots_at_once is not None:
                at_once += f" (slots busy: {case.slots_at_once})"
            lines.append(
                f"| {config.backend} | {config.replicas} | {case.kind} | {case.n} "
                f"| {len(case.ok_turns)}/{len(case.turns)} | {cell(case.turns_per_min, 1)} "
                f"| {cell(case.first_audio(0.5))} | {cell(case.first_audio(0.95))} "
                f"| {cell(case.s_per_turn, 2)} "
                f"| {times(ratio(case.s_per_turn, base.s_per_turn if base else math.nan))} "
                f"| {cell(case.cpu_per_turn, 2)} "
                f"| {times(ratio(case.cpu_per_turn, base.cpu_per_turn if base else math.nan))} "
                f"| {at_once} | {waiting(case, stages)} |"
            )
    names = [s for s in STAGE_ORDER if any(s in c.by_stage() for g in configs for c in g.cases)]
    lines += [
        "",
        "| backend | replicas | case | N | " + " | ".join(names) + " |",
        "|---|---|---|--:|" + "--:|" * len(names),
    ]
    for config in configs:
        for case in config.cases:
            used = case.by_stage()
            cells = [
                f"{used[s].cpu_s:.1f} s, {used[s].peak_rss_mb:.0f} MB" if s in used else "-"
                for s in names
            ]
            lines.append(
                f"| {config.backend} | {config.replicas} | {case.kind} | {case.n} | "
                + " | ".join(cells) + " |"
            )  # fmt: skip
    return "\n".join(lines)


def failures(configs: Sequence[ConfigResult]) -> list[str]:
    return [
        f"{config.backend} x{config.replicas} {case.kind} N={case.n} {turn.session}: {turn.status}"
        for config in configs
        for case in config.cases
        for turn in case.turns
        if not turn.ok
    ]


def case_json(config: ConfigResult, case: CaseResult) -> dict[str, Any]:
    base = config.baseline(case)
    return {
        "kind": case.kind, "n": case.n, "ok": len(case.ok_turns), "turns": len(case.turns),
        "wall_s": case.wall_s, "turns_per_min": case.turns_per_min,
        "first_audio_ms": {"what": FIRST_AUDIO[case.kind], "p50": case.first_audio(0.5),
                           "p95": case.first_audio(0.95),
                           "values": [t.first_audio_ms for t in case.ok_turns]},
        "s_per_turn": case.s_per_turn, "cpu_s": round(case.cpu_s, 2),
        "cpu_s_per_turn": case.cpu_per_turn,
        "vs_n1": {
            "s_per_turn": ratio(case.s_per_turn, base.s_per_turn if base else math.nan),
            "cpu_s_per_turn": ratio(case.cpu_per_turn, base.cpu_per_turn if base else math.nan),
            "first_audio_p50": ratio(case.first_audio(0.5),
                                     base.first_audio(0.5) if base else math.nan),
        },
        "generations_at_once": case.generations_at_once, "slots_at_once": case.slots_at_once,
        "backlog_max": {stage: asdict(w) for stage, w in case.backlog.items()},
        "processes": {name: asdict(use) for name, use in case.processes.items()},
        "settled": case.settled, "restarts": case.restarts,
        "turn_results": [asdict(t) for t in case.turns],
    }  # fmt: skip


def as_json(configs: Sequence[ConfigResult], **about: Any) -> dict[str, Any]:
    document = {
        **about,
        "configs": [
            {"backend": c.backend, "replicas": c.replicas, "slots": c.slots,
             "startup_s": c.startup_s, "seconds": c.seconds, "load_average": c.load_average,
             "cases": [case_json(c, case) for case in c.cases]}
            for c in configs
        ],
    }  # fmt: skip
    return cast(dict[str, Any], nan_to_none(document))


def summary(configs: Sequence[ConfigResult]) -> str:
    """Per configuration: how long it took and the machine's load then; per kind of case,
    the largest against one session."""
    said = []
    for config in configs:
        load = ", ".join(f"{x:.1f}" for x in config.load_average)
        said.append(
            f"{config.backend} x{config.replicas}: {cell(config.seconds)} s (stages ready in "
            f"{cell(config.startup_s, 1)} s); load average (1, 5, 15 min) at its end: {load}"
        )
        for kind in KINDS:
            cases = [c for c in config.cases if c.kind == kind]
            if len(cases) < 2:
                continue
            base, top = cases[0], cases[-1]
            said.append(
                f"{config.backend} x{config.replicas}, {kind}: N={top.n} ran "
                f"{cell(top.turns_per_min, 1)} turns/min against {cell(base.turns_per_min, 1)} "
                f"for N={base.n}; first audio p50 {cell(top.first_audio(0.5))} ms against "
                f"{cell(base.first_audio(0.5))} ms; "
                f"{cell(top.cpu_per_turn, 2)} CPU s per turn against "
                f"{cell(base.cpu_per_turn, 2)}."
            )
    return "\n".join(said)
