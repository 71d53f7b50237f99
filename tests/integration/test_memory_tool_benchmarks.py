"""The long-term memory and tool benchmarks (benchmarks/recall.py, benchmarks/tools.py):
their data hold what the benchmarks read, and each quick mode runs end to end (the bundled
LLM, the real embedder and sqlite-vec store, the policy stage in memory, the OpenAI
stand-in) and writes figures that add up.

No recall or success rate is asserted: those are the benchmarks' measurements. What is
asserted holds whatever the model says: no memory message without long-term memory, no
tool without tools, the stand-in's scripted calls all run, counts add up, rates are rates.
Replies are cut at 16 tokens here to keep the two runs near 60 s on two cores.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.recall import Case, load_cases
from benchmarks.tools import STANDIN_ARGUMENTS, load_lines, spread, standin_rules
from contracts import ChatMessage
from services.policy.settings import PolicySettings
from services.policy.tools.builtin import BUILTIN_TOOLS

ROOT = Path(__file__).resolve().parents[2]
QUICK_TIMEOUT_S = 150
REPLY_TOKENS = "16"


def run_quick(module: str, count: int, out: Path) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", module, "--quick", str(count), "--max-tokens", REPLY_TOKENS,
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| memory on |" in run.stdout or "| bundled, routed (default) |" in run.stdout
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def is_rate(value: object) -> bool:
    return value is None or (isinstance(value, float | int) and 0 <= value <= 1)


# --- the data -------------------------------------------------------------------------------


def test_recall_cases_are_complete() -> None:
    cases = load_cases()
    assert len(cases) == 40
    assert len({c.id for c in cases}) == 40
    for case in cases:
        assert case.stated, case.id
        assert case.question.strip(), case.id
        assert case.answer_keywords, case.id
        lines = [text for _, text in case.earlier_lines()]
        assert all(s in lines for s in case.stated), "the fact is said in the earlier session"
        assert len(lines) == len(case.stated) + len(case.filler) + len(case.others)
        if case.distractor:
            assert case.others, case.id
            assert case.wrong_keywords, case.id
        assert not case.found(case.question, case.answer_keywords), "the question gives it away"


def test_an_answer_keyword_is_found_in_any_case_and_a_number_only_whole() -> None:
    assert Case.found("Your pup? PEPPER!", ["Pepper"])
    assert Case.found("you paid me 30 gold", ["30"])
    assert not Case.found("300 gold, or was it 2030", ["30"])


def test_tool_lines_are_labelled_with_known_tools_and_can_be_sent() -> None:
    lines = load_lines()
    known = {tool.name for tool in BUILTIN_TOOLS}
    assert len(lines) == 47
    assert {line.tool for line in lines} - {None} == known
    assert set(PolicySettings().tools) == known == set(STANDIN_ARGUMENTS)
    for line in lines:
        message = line.message()
        assert isinstance(message, ChatMessage)
        assert (message.platform == "control_panel") == (line.tool == "switch_scene")


def test_quick_lines_mix_tool_lines_and_null_lines() -> None:
    picked = spread(load_lines(), 3)
    assert [line.tool is None for line in picked] == [False, False, True]
    assert len({line.id for line in spread(load_lines(), 47)}) == 47, "all of them, once"


def test_stand_in_rules_call_the_label_for_exactly_that_line() -> None:
    lines = load_lines()
    rules = standin_rules(lines)
    assert len(rules) == sum(line.tool is not None for line in lines)
    for line in lines:
        said = f"viewer (in chat): «{line.text}»".translate({ord("«"): '"', ord("»"): '"'})
        matched = [r for r in rules if re.search(r.pattern, said, re.IGNORECASE)]
        assert [c.name for r in matched[:1] for c in r.calls] == ([line.tool] if line.tool else [])


# --- the quick runs -----------------------------------------------------------------------


def test_recall_quick_mode_runs_and_its_figures_add_up(tmp_path: Path) -> None:
    document = run_quick("benchmarks.recall", 2, tmp_path / "recall.json")
    assert document["settings"]["cases"] == 2
    on, off = document["conditions"]["memory_on"], document["conditions"]["memory_off"]
    for condition in (on, off):
        assert condition["cases"] == 2
        assert 0 <= condition["retrieval_hits"] <= 2
        assert 0 <= condition["answered"] <= 2
        assert condition["right_viewer"] <= condition["distractor_cases"]
        assert all(is_rate(v) for k, v in condition.items() if k.endswith("_rate"))
        assert is_rate(condition["answer_recall"])
        assert sum(condition["statuses"].values()) == 2
        assert condition["first_token_ms_p50"] > 0
        assert condition["prompt_tokens_mean"] > 0
    assert off["retrieval_hits"] == 0, "without long-term memory no prompt has a memory"
    cases = document["cases"]
    assert [c["id"] for c in cases] == [c.id for c in load_cases()[:2]]
    for case in cases:
        assert case["on"]["recall_ms"] >= 0
        assert case["off"]["recall_ms"] is None
        recalled = case["on"]["memories"] > 0
        assert (case["on"]["prompt_tokens"] > case["off"]["prompt_tokens"]) == recalled
        if case["on"]["retrieved"]:
            assert recalled
            assert case["fact_kept"], "what was not kept cannot be recalled"
    added = document["added_by_memory"]
    assert added["recall_ms_p50"] > 0
    assert 0 <= added["over_budget"] <= 2
    assert is_rate(document["pooled_retrieval"]["rate"])
    assert document["machine"]["load_average"]


def test_tools_quick_mode_runs_and_its_figures_add_up(tmp_path: Path) -> None:
    document = run_quick("benchmarks.tools", 3, tmp_path / "tools.json")
    conditions = document["conditions"]
    assert set(conditions) == {"no_tools", "routed", "native", "standin", "gate"}
    for name in ("no_tools", "routed", "native", "standin"):
        c = conditions[name]
        assert (c["lines"], c["tool_lines"], c["null_lines"]) == (3, 2, 1), name
        assert c["right_tool"] + c["wrong_tool"] + c["missed"] == c["tool_lines"], name
        assert c["right_tool_ran_ok"] <= c["right_tool"]
        assert c["false_calls"] <= c["null_lines"]
        assert sum(c["outcomes"].values()) == c["calls"], name
        assert sum(c["statuses"].values()) == 3, name
        assert all(is_rate(v) for k, v in c.items() if k.endswith("_rate")), name
    assert conditions["no_tools"]["calls"] == 0, "no tools, no calls"
    assert conditions["no_tools"]["first_token_ms_p50_null_lines"] > 0
    standin = conditions["standin"]
    # It calls the labelled tool with valid arguments, and only on tool lines: every
    # call it makes runs (the wire and the stage's plumbing), none is made otherwise.
    assert standin["success_rate"] == 1.0
    assert standin["false_calls"] == 0
    assert standin["server_rejections"] == 0
    assert conditions["routed"]["cold_prompt_line"] is not None, "the first routed call"
    gate = conditions["gate"]
    assert gate["right_tool"] + gate["wrong_tool"] + gate["missed"] == gate["tool_lines"] == 2
    assert gate["correct"] == gate["right_tool"] + gate["null_lines"] - gate["false_calls"]
    assert sum(c["count"] for c in gate["confusions"]) == 3 - gate["correct"]
    assert is_rate(gate["accuracy"])
    assert gate["pick_ms_p50"] > 0
    assert len(document["lines"]["routed"]) == 3
