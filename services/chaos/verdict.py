"""What a chaos run did to each turn, judged from the streams as a viewer would see them.

Consumers drop repeats of a message id, so each stream is read the same way here: the
first entry of each message id counts, later copies do not. Then, per turn sent:
- lost: no final reply (or, for speech, nothing heard);
- answered twice: more than one final reply;
- truncated: the reply's spoken chunks are not numbered 0..n without a gap with one final,
  or their words are not the reply's words, or playback did not finish it exactly once.
Every dead letter is innocent: a chaos run sends nothing malformed.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from contracts import AsrFinal, Envelope, PlaybackProgress, PolicyToken, TtsChunk
from contracts.turns import capture_run_of, playback_ended

Kind = Literal["chat", "speech"]
Verdict = Literal["answered once", "answered twice", "truncated", "lost"]


@dataclass(frozen=True)
class SentTurn:
    kind: Kind
    session_id: str
    key: str  # chat: its turn id; speech: the capture run its turn id starts with
    text: str
    sent_at: float


@dataclass(frozen=True)
class Published:
    """A message as a stream held it, with when Redis added it."""

    message: Envelope
    added_at: float


@dataclass
class TurnReport:
    kind: Kind
    session_id: str
    turn_id: str | None
    asked: str
    verdict: Verdict
    why: str = ""
    reply: str = ""
    latency_s: dict[str, float] = field(default_factory=dict)


def first_of_each(messages: Iterable[Published]) -> list[Published]:
    """What a consumer that drops repeated message ids handles, in order."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for item in messages:
        key = (item.message.session_id, item.message.message_id)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _by_turn(messages: Iterable[Published]) -> dict[tuple[str, str], list[Published]]:
    grouped: dict[tuple[str, str], list[Published]] = defaultdict(list)
    for item in first_of_each(messages):
        if item.message.turn_id:
            grouped[(item.message.session_id, item.message.turn_id)].append(item)
    return grouped


def _words(text: str) -> list[str]:
    return text.split()


@dataclass(frozen=True)
class TurnStreams:
    """What the streams hold of one turn, repeats left out."""

    opening: list[Published]  # its chat message or final transcript
    tokens: list[Published]
    chunks: list[Published]
    expressions: list[Published]
    progress: list[Published] | None  # None: playback does not run


def judge(
    sent: Sequence[SentTurn],
    streams: Mapping[str, Sequence[Published]],
    *,
    playback: bool,
) -> list[TurnReport]:
    """streams: topic name -> its messages in the order Redis added them."""
    opened = _by_turn([*streams.get("chat.message", []), *streams.get("asr.final", [])])
    by_topic = {
        topic: _by_turn(streams.get(topic, []))
        for topic in ("policy.token", "tts.chunk", "avatar.expr", "playback.progress")
    }
    reports = []
    for turn in sent:
        key = _turn_of(turn, opened)
        report = TurnReport(turn.kind, turn.session_id, key[1] if key else None, turn.text, "lost")
        reports.append(report)
        if key is None:
            report.why = "never heard" if turn.kind == "speech" else "never read"
            continue
        of_turn = {topic: grouped.get(key, []) for topic, grouped in by_topic.items()}
        streams_of_turn = TurnStreams(
            opened[key], of_turn["policy.token"], of_turn["tts.chunk"], of_turn["avatar.expr"],
            of_turn["playback.progress"] if playback else None,
        )  # fmt: skip
        _judge_turn(report, turn, streams_of_turn)
    return reports


def _turn_of(
    turn: SentTurn, opened: Mapping[tuple[str, str], list[Published]]
) -> tuple[str, str] | None:
    if turn.kind == "chat":
        key = (turn.session_id, turn.key)
        return key if key in opened else None
    heard = [k for k in opened if k[0] == turn.session_id and capture_run_of(k[1]) == turn.key]
    return min(heard) if heard else None


def _judge_turn(report: TurnReport, turn: SentTurn, streams: TurnStreams) -> None:
    finals = [t for t in streams.tokens if isinstance(t.message, PolicyToken) and t.message.final]
    if not finals:
        report.why = "no final reply"
        return
    final = finals[0].message
    assert isinstance(final, PolicyToken)
    report.reply = final.reply_text or ""
    report.latency_s = _latencies(turn, streams)
    if len(finals) > 1:
        report.verdict = "answered twice"
        report.why = f"{len(finals)} final replies"
        return
    problem = _truncation(final, streams)
    report.verdict = "truncated" if problem else "answered once"
    report.why = problem


def _truncation(final: PolicyToken, streams: TurnStreams) -> str:
    spoken_tokens = "".join(
        t.message.text
        for t in streams.tokens
        if isinstance(t.message, PolicyToken) and not t.message.final
    )
    if _words(spoken_tokens) != _words(final.reply_text or ""):
        return "the tokens do not add up to the reply"
    speech = [c.message for c in streams.chunks if isinstance(c.message, TtsChunk)]
    indexes = [c.index for c in speech]
    if indexes != list(range(len(indexes))):
        return f"chunk indexes {indexes}"
    if [c.final for c in speech].count(True) != 1 or not speech[-1].final:
        return f"{[c.final for c in speech].count(True)} final chunks"
    heard = " ".join(c.text for c in speech if c.text)
    if _words(heard) != _words(final.reply_text or ""):
        return f"spoken {heard!r}"
    if streams.progress is not None:
        ends = [
            p.message for p in streams.progress if isinstance(p.message, PlaybackProgress)
            and playback_ended(p.message)
        ]  # fmt: skip
        if [e.state for e in ends] != ["finished"]:
            return f"playback ended {[e.state for e in ends]}"
    return ""


def _latencies(turn: SentTurn, streams: TurnStreams) -> dict[str, float]:
    """How long each stage took with the turn: from its input's entry to its first output's."""
    first = streams.opening[0]
    heard_by = "asr" if isinstance(first.message, AsrFinal) else "chat in"
    latency = {heard_by: first.added_at - turn.sent_at}
    finals = [t for t in streams.tokens if isinstance(t.message, PolicyToken) and t.message.final]
    if finals:
        latency["reply"] = finals[0].added_at - turn.sent_at  # asked -> answered in full
    steps = [
        ("policy", streams.opening, streams.tokens),
        ("tts", streams.tokens, streams.chunks),
        ("avatar", streams.chunks, streams.expressions),
        ("playback", streams.chunks, streams.progress or []),
    ]
    for stage, inputs, outputs in steps:
        if inputs and outputs:
            latency[stage] = outputs[0].added_at - inputs[0].added_at
    return latency


@dataclass(frozen=True)
class Recovery:
    """One kill: of which replica, and how long until what it held was served again."""

    stage: str
    replica: str
    at_s: float  # since the run began
    partitions: int  # it held
    served_again_s: float | None  # None: not within the run


@dataclass
class ChaosReport:
    turns: list[TurnReport]
    kills: list[Recovery]
    redis_restarts: list[float]  # per restart: how long the next turn asked took to answer
    lease_changes_after_restarts: list[int]  # leases that changed hands across each restart
    dead_letters: list[dict[str, Any]]
    replicas: dict[str, int]
    duration_s: float

    def count(self, verdict: Verdict) -> int:
        return sum(1 for t in self.turns if t.verdict == verdict)

    def summary(self) -> dict[str, Any]:
        recoveries = [k.served_again_s for k in self.kills if k.served_again_s is not None]
        stages = sorted({name for t in self.turns for name in t.latency_s})
        return {
            "turns sent": len(self.turns),
            "answered once": self.count("answered once"),
            "answered twice": self.count("answered twice"),
            "lost": self.count("lost"),
            "truncated": self.count("truncated"),
            "innocent dead letters": len(self.dead_letters),
            "kills": len(self.kills),
            "kills not recovered": sum(1 for k in self.kills if k.served_again_s is None),
            "recovery s": spread(recoveries),
            "redis restarts": len(self.redis_restarts),
            "next turn answered after a redis restart s": spread(self.redis_restarts),
            "leases that changed across a redis restart": sum(self.lease_changes_after_restarts),
            "stage latency s": {
                name: spread([t.latency_s[name] for t in self.turns if name in t.latency_s])
                for name in stages
            },
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "replicas": self.replicas,
            "duration_s": round(self.duration_s, 1),
            "turns": [asdict(t) for t in self.turns],
            "kills": [asdict(k) for k in self.kills],
            "dead_letters": self.dead_letters,
        }


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    values = [v for v in values if v == v]  # NaN: not measured
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "max": round(max(values), 3),
    }
