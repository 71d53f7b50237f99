"""The per-turn diff of a replay against its recording.

Each turn compares what was heard, the reply, its number of chunks and seconds of audio,
each judged "same", "close" (different, within the tolerance a model may legitimately
differ by) or "changed"; latencies are shown side by side and never judged, since they
depend on the machine and its load.
"""

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from services.replay.turns import TurnSummary

Verdict = Literal["same", "close", "changed"]
TurnStatus = Literal["same", "close", "changed", "missing", "extra", "unfinished"]
SPEECH_MATCH_S = 1.0
"""A voice turn pairs with the replayed one whose speech started within this of it."""


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference's length (case, punctuation ignored)."""
    ref, hyp = _words(reference), _words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, other in enumerate(hyp, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other))
            )
        previous = current
    return previous[-1] / max(len(ref), 1)


def word_similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(a=_words(a), b=_words(b), autojunk=False).ratio()


@dataclass(frozen=True)
class Tolerance:
    """How far a replayed turn may differ and still count as the same behaviour."""

    transcript_wer: float = 0.15
    reply_similarity: float = 0.8
    chunks: int = 1
    audio_ratio: float = 0.2


@dataclass(frozen=True)
class FieldDiff:
    name: str
    recorded: str | int | float | None
    replayed: str | int | float | None
    verdict: Verdict
    detail: str = ""


@dataclass
class TurnDiff:
    session_id: str
    turn_id: str
    replayed_turn_id: str | None
    status: TurnStatus
    fields: list[FieldDiff] = field(default_factory=list)
    latency_ms: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def field_named(self, name: str) -> FieldDiff | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass
class ReplayReport:
    turns: list[TurnDiff]
    tolerance: Tolerance

    @property
    def changed(self) -> list[TurnDiff]:
        return [t for t in self.turns if t.status in ("changed", "missing", "extra")]

    @property
    def ok(self) -> bool:
        return not self.changed

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for turn in self.turns:
            found[turn.status] = found.get(turn.status, 0) + 1
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts(),
            "tolerance": asdict(self.tolerance),
            "turns": [asdict(t) for t in self.turns],
        }


def _text_diff(
    name: str, old: str | None, new: str | None, score: float, limit: float, higher_is_closer: bool
) -> FieldDiff:
    if old == new:
        return FieldDiff(name, old, new, "same")
    if old is None or new is None:
        return FieldDiff(name, old, new, "changed", "missing")
    within = score >= limit if higher_is_closer else score <= limit
    label = "similarity" if higher_is_closer else "WER"
    return FieldDiff(name, old, new, "close" if within else "changed", f"{label} {score:.2f}")


def _compare_fields(old: TurnSummary, new: TurnSummary, tol: Tolerance) -> list[FieldDiff]:
    heard = _text_diff(
        "heard",
        old.heard,
        new.heard,
        word_error_rate(old.heard or "", new.heard or ""),
        tol.transcript_wer,
        higher_is_closer=False,
    )
    reply = _text_diff(
        "reply",
        old.reply,
        new.reply,
        word_similarity(old.reply or "", new.reply or ""),
        tol.reply_similarity,
        higher_is_closer=True,
    )
    chunk_gap = abs(old.chunks - new.chunks)
    chunks = FieldDiff(
        "chunks",
        old.chunks,
        new.chunks,
        "same" if chunk_gap == 0 else "close" if chunk_gap <= tol.chunks else "changed",
    )
    ratio = new.audio_s / old.audio_s if old.audio_s else (1.0 if not new.audio_s else 0.0)
    audio_verdict: Verdict = (
        "same"
        if round(old.audio_s, 3) == round(new.audio_s, 3)
        else "close"
        if abs(ratio - 1) <= tol.audio_ratio
        else "changed"
    )
    audio = FieldDiff(
        "audio_s", round(old.audio_s, 2), round(new.audio_s, 2), audio_verdict, f"x{ratio:.2f}"
    )
    status = FieldDiff(
        "status", old.status, new.status, "same" if old.status == new.status else "changed"
    )
    old_tools, new_tools = ", ".join(old.tools), ", ".join(new.tools)
    # Which tools ran, and how, is behaviour: a change is a change (their results, the time
    # or a dice roll, may differ and are not compared).
    tools = FieldDiff(
        "tools", old_tools, new_tools, "same" if old_tools == new_tools else "changed"
    )
    return [heard, reply, status, chunks, audio, tools]


def _status(fields: Sequence[FieldDiff]) -> TurnStatus:
    verdicts = {f.verdict for f in fields}
    return "changed" if "changed" in verdicts else "close" if "close" in verdicts else "same"


def _pair(old: TurnSummary, candidates: list[TurnSummary]) -> TurnSummary | None:
    same_id = [t for t in candidates if t.session_id == old.session_id and t.turn_id == old.turn_id]
    if same_id:
        return same_id[0]
    if old.kind != "voice" or old.speech_start_s is None:
        return None
    near = [
        t
        for t in candidates
        if t.session_id == old.session_id
        and t.kind == "voice"
        and t.speech_start_s is not None
        and abs(t.speech_start_s - old.speech_start_s) <= SPEECH_MATCH_S
    ]
    return min(
        near, key=lambda t: abs((t.speech_start_s or 0) - (old.speech_start_s or 0)), default=None
    )


def compare(
    recorded: Sequence[TurnSummary],
    replayed: Sequence[TurnSummary],
    tolerance: Tolerance = Tolerance(),
) -> ReplayReport:
    """Pair each recorded turn with its replay (same ids, or a voice turn whose speech
    started at the same point of the input) and judge what changed."""
    left = list(replayed)
    turns = []
    for old in recorded:
        new = _pair(old, left)
        if new is not None:
            left.remove(new)
        if not old.finished:
            status: TurnStatus = "unfinished"  # the recording stopped mid-turn: nothing to judge
            replayed_id = new.turn_id if new is not None else None
            turns.append(TurnDiff(old.session_id, old.turn_id, replayed_id, status))
            continue
        if new is None:
            turns.append(TurnDiff(old.session_id, old.turn_id, None, "missing"))
            continue
        fields = _compare_fields(old, new, tolerance)
        latency = {name: (ms, new.latencies_ms()[name]) for name, ms in old.latencies_ms().items()}
        turns.append(
            TurnDiff(old.session_id, old.turn_id, new.turn_id, _status(fields), fields, latency)
        )
    for new in left:
        turns.append(TurnDiff(new.session_id, new.turn_id, new.turn_id, "extra"))
    return ReplayReport(turns, tolerance)
