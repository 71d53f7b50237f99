"""benchmarks.browser_mic, tiny: one question per path (the panel's browser microphone in
Chromium, and the file over /ws/audio), no warm-up, with the real models under
`marionette up` (about 40 s on two cores when nothing else runs).

It asserts only that both paths produced a reply and that its figures are positive numbers,
and that the report and the JSON can be made of them: no timing is asserted.
"""

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from benchmarks import browser_mic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
pytest.importorskip("playwright.async_api")


async def test_both_paths_answer_the_question_with_positive_figures(chromium: Path) -> None:
    result = await browser_mic.run(questions=1, warmups=0, say=print)

    assert [t.path for t in result.turns] == ["browser", "file"]
    for turn in result.turns:
        assert turn.answered, f"{turn.path}: {turn.status}"
        assert turn.turn_id, turn.path
        assert turn.heard.strip(), f"{turn.path}: nothing heard"
        assert turn.reply.strip(), f"{turn.path}: no reply text"
        assert turn.client.blocks > 0, f"{turn.path}: no reply audio at the client"
        assert turn.client.turn == turn.turn_id, "the client's reply is the heard turn's"
        for name in ("bus_ms", "client_ms", "asr_ms", "reply_ms", "out_ms"):
            value = getattr(turn, name)
            assert math.isfinite(value), (turn.path, name, value)
            assert value > 0, (turn.path, name, value)
    for path in browser_mic.PATHS:
        for measure in browser_mic.MEASURES:
            spread = result.spread(path, measure)
            assert spread.n == 1, (path, measure)
            assert spread.p50 > 0, (path, measure, spread)

    console = Console(width=140, record=True)
    browser_mic.print_report(result, console)
    assert "browser adds" in console.export_text()
    document = json.loads(json.dumps(browser_mic.as_json(result), allow_nan=False))
    assert document["paths"]["file"]["client_ms"]["n"] == 1
