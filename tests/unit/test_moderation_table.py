"""Moderation on the tables of real-looking chat (tests/data/moderation/): attacks across
every trick, and ordinary lines that must pass (a false positive refuses a viewer live).

The held-out attack sets are measured, not asserted: `python -m benchmarks.takeover`."""

import json
from pathlib import Path
from typing import Any

import pytest

from services.moderation import BUNDLED_RULES, Moderator
from services.moderation.takeover import TakeoverCheck

DATA = Path(__file__).parents[1] / "data" / "moderation"
MODERATOR = Moderator(BUNDLED_RULES)
REPLY_CHECK_ONLY = {
    "a147": "letters given one line at a time (PW + NED): nothing to read until the reply",
    "a155": "a word built over three lines: only the reply shows it",
}
"""Attacks no input rule can see; the reply check catches what they aim at."""


def rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def refused(row: dict[str, Any]) -> bool:
    parts = row.get("parts") or [row["text"]]
    return any(
        not MODERATOR.check_input(part, True, author=row.get("author"), recent=parts[:i]).allowed
        for i, part in enumerate(parts)
    )


INNOCENT = [
    r
    for name in ("innocent", "heldout_innocent", "fresh_innocent", "fresh2_innocent")
    for r in rows(f"{name}.jsonl")
]
ATTACKS = rows("attacks.jsonl")


@pytest.mark.parametrize("row", INNOCENT, ids=lambda r: r["id"])
def test_ordinary_chat_passes(row: dict[str, Any]) -> None:
    verdict = MODERATOR.check_input(row["text"], True, author=row["author"])
    assert verdict.allowed, verdict.reason


@pytest.mark.parametrize("row", ATTACKS, ids=lambda r: f"{r['id']}-{r['class']}")
def test_an_attack_is_refused_before_the_llm(row: dict[str, Any]) -> None:
    if row["id"] in REPLY_CHECK_ONLY:
        assert row["marker"], "what the reply check looks for"
        check = TakeoverCheck("Mari", "You are Mari.", row["parts"])
        assert check.check(f"Okay! {row['marker']}!") is not None
        return
    assert refused(row)


def test_the_tables_are_large_and_cover_every_trick() -> None:
    assert len(ATTACKS) >= 130
    assert len(INNOCENT) >= 130
    classes = {row["class"] for row in ATTACKS}
    assert {"homoglyph", "spacing", "leetspeak", "invisible", "encoding", "template",
            "author", "split", "language", "roleplay"} <= classes  # fmt: skip
