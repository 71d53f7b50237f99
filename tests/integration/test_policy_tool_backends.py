"""Tool calls over the real wire: policy's OpenAI-compatible and Ollama backends against
protocol-level stand-ins of those servers (tests/standins/openai.py, ollama.py), which
check the requests as strict servers do and call tools by a script.

The turn runs in the stage harness; the backends, their client libraries and HTTP are real.
"""

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from contracts import ChatMessage, PolicyToken
from contracts.tools import ToolEvent
from contracts.topics import POLICY_TOKEN, TOOL_EVENT
from services.bus.harness import StageHarness
from services.policy.backends import make_backend
from services.policy.settings import PolicySettings
from services.policy.stage import PolicyStage
from tests.standins.ollama import OllamaStandIn, ollama_stand_in
from tests.standins.openai import OpenAIStandIn, openai_stand_in
from tests.standins.tool_rules import ScriptedCall, ToolRule

RULES = [  # the first that matches decides
    ToolRule(r"time.*and.*dice", (ScriptedCall("time"), ScriptedCall("dice", {"sides": 6}))),
    ToolRule.calling(r"\broll\b", "dice", {"sides": 20}),
    ToolRule.calling(r"\bscene\b", "switch_scene", {"scene": "gaming"}),
]


@pytest.fixture(params=["openai", "ollama"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    stand_in: AbstractContextManager[Any]
    if request.param == "openai":
        stand_in = openai_stand_in(OpenAIStandIn(rules=list(RULES), models=set()))
    else:
        stand_in = ollama_stand_in(OllamaStandIn(rules=list(RULES)))
    with stand_in as state:
        yield request.param, state


def policy_for(backend_name: str, state: Any) -> StageHarness[PolicyStage]:
    model = "llama3.2" if backend_name == "ollama" else "qwen2.5-0.5b"
    settings = PolicySettings(
        backend=backend_name, base_url=state.url, model=model, retry_backoff_ms=0, seed=3
    )  # type: ignore[arg-type]
    backend = make_backend(settings)
    return StageHarness(lambda bus: PolicyStage(settings, backend, bus))


def chat(text: str, turn: str, platform: str = "twitch") -> ChatMessage:
    return ChatMessage(
        session_id="s1", turn_id=turn, seq=0, platform=platform, author="viewer", text=text
    )  # type: ignore[arg-type]


def final(policy: StageHarness[PolicyStage], turn: str) -> PolicyToken:
    (last,) = [t for t in policy.published(POLICY_TOKEN) if t.final and t.turn_id == turn]
    return last


async def test_a_tool_call_travels_both_ways(server: tuple[str, Any]) -> None:
    name, state = server
    policy = policy_for(name, state)
    await policy.send(chat("roll a d20 for me", "t1"))
    results = [e for e in policy.published(TOOL_EVENT) if e.phase == "result"]
    assert [(e.tool, e.outcome) for e in results] == [("dice", "ok")]
    rolled = results[0].result
    assert final(policy, "t1").reply_text == f"The tool said: {rolled}"
    assert state.rejections == [], "the server found nothing wrong with the requests"
    chats = [r for r in state.requests if "messages" in r]
    offered = {t["function"]["name"] for t in chats[0]["tools"]}
    assert "dice" in offered
    assert "switch_scene" not in offered, "a viewer's turn"
    sent_back = chats[-1]["messages"][-1]
    assert sent_back["role"] == "tool"
    assert sent_back["content"] == rolled


async def test_parallel_calls_run_together_and_answer_in_order(server: tuple[str, Any]) -> None:
    name, state = server
    policy = policy_for(name, state)
    await policy.send(chat("tell me the time and roll the dice", "t1"))
    results = [e for e in policy.published(TOOL_EVENT) if e.phase == "result"]
    assert [e.tool for e in results] == ["time", "dice"]
    assert final(policy, "t1").reply_text == (
        f"The tool said: {results[0].result} / {results[1].result}"
    )
    assert state.rejections == []


async def test_a_call_a_viewer_may_not_make_is_never_offered(server: tuple[str, Any]) -> None:
    name, state = server
    policy = policy_for(name, state)
    await policy.send(chat("change the scene please", "viewer"))
    assert policy.published(TOOL_EVENT) == [], "not offered, so the server could not call it"
    await policy.send(chat("change the scene please", "operator", platform="control_panel"))
    events: list[ToolEvent] = policy.published(TOOL_EVENT)
    assert [(e.tool, e.outcome) for e in events if e.phase == "result"] == [("switch_scene", "ok")]
