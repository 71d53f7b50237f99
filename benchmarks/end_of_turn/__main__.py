"""End-of-turn accuracy: does asr tell a finished turn from a pause mid-sentence?

    python -m benchmarks.end_of_turn [--quick] [--json] [--only piper|human] [--cache DIR]

On every case of the labelled set (cases.py: the bundled Piper voice, and real people from
packaged recordings), as asr does at a pause: the transcript (FasterWhisperRecognizer with
AsrSettings(), the bundled tiny.en) and Smart Turn v3.2's probability, then three rules:

- model: the probability alone, >= TurnJudge's threshold (0.5);
- judge: TurnJudge, the model and the transcript's last word/punctuation (what asr runs);
- words: TurnJudge with the probability replaced by 0.5 (the transcript alone).

Reports accuracy and precision/recall of "complete" per source and overall (a false
"complete" cuts the speaker off; a false "incomplete" makes asr wait unfinished_silence_ms
instead of finished_silence_ms), the model's milliseconds per decision, and the silence-only
endpointer it replaces, which calls every pause of 600 ms complete. --quick takes every
fourth case. "human/clear" leaves out the mid-sentence pauses whose words so far would
make a finished sentence. Prints figures; asserts nothing.
"""

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.end_of_turn.cases import CACHE, Case, build_set
from benchmarks.figures import nan_to_none
from services.asr.turn_model import TurnJudge, TurnVerdict

RULES = ("model", "judge", "words")
SILENCE_ENDPOINT_S = 0.6  # the old endpointer's end_silence_ms


@dataclass(frozen=True)
class Result:
    case: Case
    transcript: str
    probability: float
    model_ms: float
    verdicts: dict[str, TurnVerdict]


def run(cases: list[Case], progress: Callable[[int, int], None]) -> list[Result]:
    from services.asr.recognizer import FasterWhisperRecognizer
    from services.asr.settings import AsrSettings
    from services.asr.turn_model import SmartTurn
    from services.models.bundled import smart_turn_model_path

    settings = AsrSettings()
    recognizer = FasterWhisperRecognizer(settings)
    model = SmartTurn(smart_turn_model_path(), settings.turn_model_threads)
    judge = TurnJudge()
    model.probability(cases[0].pcm)  # warm-up, not timed
    recognizer.transcribe(cases[0].pcm)
    results = []
    for n, case in enumerate(cases):
        started = time.perf_counter()
        probability = model.probability(case.pcm)
        model_ms = (time.perf_counter() - started) * 1000
        text = recognizer.transcribe(case.pcm).text
        verdicts = {
            "model": TurnVerdict(probability >= judge.threshold, probability, "model alone"),
            "judge": judge.judge(probability, text),
            "words": judge.judge(0.5, text),
        }
        results.append(Result(case, text, probability, model_ms, verdicts))
        progress(n + 1, len(cases))
    return results


def scores(results: list[Result], rule: str) -> dict[str, float | int]:
    """Accuracy, and precision/recall with "complete" as the positive class."""
    said = [r.verdicts[rule].complete for r in results]
    truth = [r.case.complete for r in results]
    tp = sum(s and t for s, t in zip(said, truth, strict=True))
    fp = sum(s and not t for s, t in zip(said, truth, strict=True))
    fn = sum(t and not s for s, t in zip(said, truth, strict=True))
    right = sum(s == t for s, t in zip(said, truth, strict=True))
    nan = float("nan")
    return {
        "cases": len(results),
        "accuracy": right / len(results) if results else nan,
        "precision": tp / (tp + fp) if tp + fp else nan,
        "recall": tp / (tp + fn) if tp + fn else nan,
        "cut_off": fp,  # incomplete turns called complete
        "kept_waiting": fn,  # complete turns called incomplete
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def judge_wrong(r: Result) -> dict[str, Any]:
    return {
        "id": r.case.id,
        "complete": r.case.complete,
        "stands_alone": r.case.stands_alone,
        "probability": round(r.probability, 3),
        "transcript": r.transcript,
        "words": r.case.words,
        "reason": r.verdicts["judge"].reason,
    }


def report(results: list[Result]) -> dict[str, Any]:
    groups: dict[str, list[Result]] = {
        "piper": [r for r in results if r.case.source == "piper"],
        "human": [r for r in results if r.case.source == "human"],
        "all": results,
    }
    for pause in ("natural", "end", "cut"):
        groups[f"human/{pause}"] = [r for r in groups["human"] if r.case.pause == pause]
    groups["human/clear"] = [r for r in groups["human"] if not r.case.stands_alone]
    rules = {
        name: {rule: scores(rs, rule) for rule in RULES}
        | {"complete": sum(r.case.complete for r in rs)}
        | {"incomplete": sum(not r.case.complete for r in rs)}
        for name, rs in groups.items()
        if rs
    }
    incomplete = [r for r in results if not r.case.complete]
    natural_incomplete = [r for r in incomplete if r.case.pause == "natural"]
    ms = [r.model_ms for r in results]
    return {
        "rules": rules,
        "model_ms": {
            "p50": statistics.median(ms) if ms else float("nan"),
            "p95": percentile(ms, 95),
            "max": max(ms, default=float("nan")),
        },
        "silence_only": {
            "endpoint_s": SILENCE_ENDPOINT_S,
            "accuracy_if_every_pause_reaches_it": (len(results) - len(incomplete)) / len(results),
            "incomplete_cut_off_share": 1.0 if incomplete else float("nan"),
            "real_mid_sentence_pauses": len(natural_incomplete),
            "real_mid_sentence_pauses_reaching_it": sum(
                (r.case.pause_s or 0) >= SILENCE_ENDPOINT_S for r in natural_incomplete
            ),
        },
        "judge_wrong": [
            judge_wrong(r) for r in results if r.verdicts["judge"].complete != r.case.complete
        ],
    }


def print_report(summary: dict[str, Any], results: list[Result]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=140)  # a log keeps it whole
    table = Table(title="End of turn: accuracy, precision / recall of 'complete'")
    for column in ("cases", "rule", "accuracy", "precision", "recall", "cut off", "kept waiting"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for name, row in summary["rules"].items():
        for i, rule in enumerate(RULES):
            s = row[rule]
            label = f"{name} ({row['complete']}+{row['incomplete']})" if i == 0 else ""
            table.add_row(
                label, rule, f"{s['accuracy']:.1%}", f"{s['precision']:.1%}",
                f"{s['recall']:.1%}", str(s["cut_off"]), str(s["kept_waiting"]),
                end_section=i == len(RULES) - 1,
            )  # fmt: skip
    console.print(table)
    ms, silence = summary["model_ms"], summary["silence_only"]
    console.print(
        f"Smart Turn per decision: p50 {ms['p50']:.1f} ms, p95 {ms['p95']:.1f} ms, "
        f"max {ms['max']:.1f} ms (features + ONNX, {len(results)} cases)"
    )
    console.print(
        f"Silence only ({silence['endpoint_s']:.1f} s): every pause that long is called "
        f"complete: accuracy {silence['accuracy_if_every_pause_reaches_it']:.1%}, and "
        f"{silence['incomplete_cut_off_share']:.0%} of incomplete turns cut off; of "
        f"{silence['real_mid_sentence_pauses']} real mid-sentence pauses here, "
        f"{silence['real_mid_sentence_pauses_reaching_it']} lasted that long."
    )
    wrong = Table(title="Where TurnJudge is wrong")
    for column in ("case", "truth", "p", "transcript", "reason"):
        wrong.add_column(column, overflow="fold")
    for w in summary["judge_wrong"]:
        truth = "complete" if w["complete"] else "incomplete"
        truth += " (words stand alone)" if w["stands_alone"] else ""
        heard = w["transcript"] if len(w["transcript"]) <= 60 else "…" + w["transcript"][-59:]
        wrong.add_row(w["id"], truth, f"{w['probability']:.2f}", heard, w["reason"])
    console.print(wrong)


def every_fourth(cases: list[Case]) -> list[Case]:
    """Every fourth case of each source and label, so a quick run keeps the mix."""
    seen: Counter[tuple[str, bool]] = Counter()
    kept = []
    for case in cases:
        key = (case.source, case.complete)
        if seen[key] % 4 == 0:
            kept.append(case)
        seen[key] += 1
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every fourth case")
    parser.add_argument("--json", action="store_true", help="a JSON document on stdout")
    parser.add_argument("--only", choices=("piper", "human"))
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    cases = build_set(args.cache, piper=args.only != "human", human=args.only != "piper")
    if args.quick:
        cases = every_fourth(cases)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    results = run(cases, progress)
    summary = report(results)
    if args.json:
        document = summary | {
            "cases": [
                {
                    "id": r.case.id, "source": r.case.source, "origin": r.case.origin,
                    "pause": r.case.pause, "pause_s": r.case.pause_s,
                    "complete": r.case.complete, "stands_alone": r.case.stands_alone,
                    "words": r.case.words,
                    "transcript": r.transcript, "probability": round(r.probability, 4),
                    "model_ms": round(r.model_ms, 2),
                    "decisions": {rule: v.complete for rule, v in r.verdicts.items()},
                }
                for r in results
            ]
        }  # fmt: skip
        json.dump(nan_to_none(document), sys.stdout, indent=1)
        print()
    else:
        print_report(summary, results)


if __name__ == "__main__":
    main()
