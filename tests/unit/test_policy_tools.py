"""Tools in a turn: the model's calls run with limits, are published as tool.event, and
their results reach the model; the reply survives a crash without running them again."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import ChatMessage, Control, PolicyToken
from contracts.control import SceneSwitch
from contracts.tools import ToolEvent
from contracts.topics import CONTROL, POLICY_TOKEN, TOOL_EVENT
from contracts.vision import SeenObject, VisionObservation
from services.bus.harness import SimulatedCrash, StageHarness
from services.memory.embedder import Embedder
from services.policy.backends import Generation, Messages
from services.policy.settings import PolicySettings
from services.policy.stage import WARM_UP, PolicyStage
from services.policy.tools.builtin import BUILTIN_TOOLS, now_local
from services.policy.tools.declared import Tool, ToolContext
from services.policy.tools.gate import ToolGate
from services.policy.tools.runner import ToolRunner
from services.policy.tools.wire import (
    MarkupFilter,
    ToolCall,
    ToolCallParser,
    exchange,
    for_ollama,
    for_openai,
)


class ToolCallingBackend:
    """Calls the scripted tools on a turn's first request; once results are in the
    messages, answers with them quoted. Records what it was offered and sent."""

    name = "scripted-tools"

    def __init__(self, calls: list[ToolCall], said_first: str = "") -> None:
        self.calls = calls
        self.said_first = said_first
        self.requests: list[tuple[Messages, Any]] = []
        self.prefixes: list[str] = []  # what each reply was to go on from

    async def check(self) -> None:
        pass

    async def stream(
        self, messages: Messages, options: Generation, prefix: str = "", tools: Any = None
    ) -> AsyncIterator[str | ToolCall]:
        if options == WARM_UP:
            return
        self.requests.append((messages, tools))
        self.prefixes.append(prefix)
        results = [m["content"] for m in messages if m["role"] == "tool"]
        if results:
            for word in f"[happy] The tool said: {' / '.join(results)}".split(" "):
                yield word + " "
            return
        if self.said_first:
            yield self.said_first
        for call in self.calls:
            yield call


def chat(text: str, turn: str = "t1", author: str = "viewer", **fields: Any) -> ChatMessage:
    return ChatMessage(
        session_id="s1", turn_id=turn, seq=0, platform=fields.pop("platform", "twitch"),
        author=author, text=text, **fields,
    )  # fmt: skip


def harness(backend: Any, **overrides: Any) -> StageHarness[PolicyStage]:
    overrides.setdefault("tool_calling", "native")  # the scripted model calls them itself
    settings = PolicySettings(retry_backoff_ms=0, **overrides)
    return StageHarness(lambda bus: PolicyStage(settings, backend, bus))


def events(policy: StageHarness[PolicyStage]) -> list[ToolEvent]:
    return list(policy.published(TOOL_EVENT))


def final(policy: StageHarness[PolicyStage]) -> PolicyToken:
    (last,) = [t for t in policy.published(POLICY_TOKEN) if t.final]
    return last


# --- the wire -------------------------------------------------------------------------------


def test_a_call_split_across_tokens_is_read_whole_and_text_around_it_passes() -> None:
    parser = ToolCallParser()
    pieces = [
        "Sure! <tool",
        '_call>\n{"name": "dice", "argu',
        'ments": {"sides": 20}}\n</tool_',
        "call>",
    ]
    out = [p for piece in pieces for p in parser.feed(piece)] + parser.flush()
    assert out == ["Sure! ", ToolCall("call-1", "dice", {"sides": 20})]


def test_a_call_left_open_at_the_end_still_counts_and_broken_json_is_an_error() -> None:
    parser = ToolCallParser()
    assert parser.feed('<tool_call>{"name": "time", "arguments": {}}') == []
    assert parser.flush() == [ToolCall("call-1", "time", {})]
    (broken,) = ToolCallParser().feed("<tool_call>{name: time}</tool_call>")
    assert isinstance(broken, ToolCall)
    assert broken.arguments is None
    assert "not JSON" in (broken.error or "")


def test_each_server_gets_tool_exchanges_in_its_own_shape() -> None:
    messages = exchange("Let me see.", [ToolCall("c1", "dice", {"sides": 6})], ["Rolled a 4."])
    openai = for_openai(messages)
    assert openai[0]["tool_calls"][0]["function"]["arguments"] == '{"sides": 6}'
    assert openai[1] == {"role": "tool", "tool_call_id": "c1", "content": "Rolled a 4."}
    ollama = for_ollama(messages)
    assert ollama[0]["tool_calls"] == [{"function": {"name": "dice", "arguments": {"sides": 6}}}]
    assert ollama[1] == {"role": "tool", "content": "Rolled a 4.", "tool_name": "dice"}


# --- the runner -----------------------------------------------------------------------------


def context(**overrides: Any) -> ToolContext:
    async def nothing(*_: Any) -> None:
        return None

    fields: dict[str, Any] = dict(
        session_id="s1", turn_id="t1", author="viewer", persona="Mari",
        expressions=["happy", "surprised"], seed=7, now=now_local,
        express=lambda tag: None, control=nothing, latest_view=nothing,
    )  # fmt: skip
    fields.update(overrides)
    return ToolContext(**fields)


async def test_wrong_calls_come_back_as_results_the_model_can_read() -> None:
    published: list[ToolEvent] = []

    async def publish(event: ToolEvent) -> None:
        published.append(event)

    runner = ToolRunner(BUILTIN_TOOLS, publish, timeout_s=1)
    ctx = context()
    unknown = await runner.run(ToolCall("x", "teleport", {}), ctx, False, "r0c0")
    bad = await runner.run(ToolCall("x", "dice", {"sides": 1}), ctx, False, "r0c1")
    scene = await runner.run(ToolCall("x", "switch_scene", {"scene": "gaming"}), ctx, False, "r0c2")
    assert (unknown.outcome, bad.outcome, scene.outcome) == ("error", "error", "refused")
    assert "there is no tool 'teleport'" in unknown.result
    assert "dice" in unknown.result
    assert "sides" in bad.result, "the field at fault is named"
    assert [(e.call_id, e.phase) for e in published] == [
        ("r0c0", "call"), ("r0c0", "result"), ("r0c1", "call"), ("r0c1", "result"),
        ("r0c2", "call"), ("r0c2", "result"),
    ]  # fmt: skip
    assert published[1].message_id == "t1.tool-r0c0:1"


async def test_a_tool_that_hangs_is_cut_off_at_its_time_limit() -> None:
    async def hang(args: Any, ctx: ToolContext) -> str:
        await asyncio.sleep(30)
        return "never"

    slow = Tool("slow", "Never answers.", BUILTIN_TOOLS[0].arguments, hang, timeout_s=0.05)

    async def publish(event: ToolEvent) -> None:
        pass

    ran = await ToolRunner([slow], publish, timeout_s=5).run(
        ToolCall("x", "slow", {}), context(), True, "r0c0"
    )
    assert ran.outcome == "timeout"
    assert "0.05 s" in ran.result


async def test_dice_and_choices_repeat_when_the_turn_is_redone() -> None:
    async def publish(event: ToolEvent) -> None:
        pass

    runner = ToolRunner(BUILTIN_TOOLS, publish, timeout_s=1)
    call = ToolCall("x", "dice", {"sides": 20, "count": 3})
    first = await runner.run(call, context(seed=11), False, "r0c0")
    again = await runner.run(call, context(seed=11), False, "r0c0")
    other = await runner.run(call, context(seed=12), False, "r0c0")
    assert first.result == again.result
    assert first.result.startswith("Rolled 3d20: ")
    assert other.result != first.result or other.result.startswith("Rolled 3d20")


# --- tools in a turn ------------------------------------------------------------------------


async def test_a_tool_call_runs_and_the_model_answers_with_its_result() -> None:
    backend = ToolCallingBackend([ToolCall("srv-1", "dice", {"sides": 20})])
    policy = harness(backend, seed=5)
    await policy.send(chat("roll a d20 for me"))
    call, result = events(policy)
    assert (call.tool, call.phase, call.arguments) == ("dice", "call", {"sides": 20})
    assert result.outcome == "ok"
    assert result.result.startswith("Rolled a d20: ")
    reply = final(policy)
    assert reply.status == "ok"
    assert reply.reply_text == f"The tool said: {result.result}"
    (_, offered), (second, _) = backend.requests
    assert "switch_scene" not in {t["function"]["name"] for t in offered}, "a viewer's turn"
    assert {t["function"]["name"] for t in offered} >= {"dice", "time", "describe_view"}
    assert not {t["function"]["name"] for t in offered} & {"remember", "recall"}, (
        "no long-term memory in this stage: nothing to remember with"
    )
    assert second[-2]["tool_calls"][0]["function"] == {"name": "dice", "arguments": {"sides": 20}}
    assert second[-1] == {"role": "tool", "tool_call_id": "srv-1", "name": "dice",
                          "content": result.result}  # fmt: skip


async def test_a_slow_tool_gets_the_filler_line_said_first() -> None:
    backend = ToolCallingBackend([ToolCall("c", "time", {})])
    policy = harness(backend, tool_filler_after_ms=0, tool_filler="One moment...")
    await policy.send(chat("what time is it?"))
    assert final(policy).reply_text.startswith("One moment... The tool said: It is ")


async def test_what_the_model_said_before_calling_goes_out_before_the_filler() -> None:
    backend = ToolCallingBackend([ToolCall("c", "time", {})], said_first="Hmm, let me see")
    policy = harness(backend, tool_filler_after_ms=0, tool_filler="One moment...")
    await policy.send(chat("what time is it?"))
    assert final(policy).reply_text.startswith("Hmm, let me see One moment... The tool said:")


async def test_the_operator_may_switch_scenes_and_a_viewer_may_not() -> None:
    backend = ToolCallingBackend([ToolCall("c", "switch_scene", {"scene": "gaming"})])
    policy = harness(backend)
    await policy.send(chat("switch to gaming", turn="viewer-turn"))
    await policy.send(chat("switch to gaming", turn="operator-turn", platform="control_panel"))
    outcomes = [(e.turn_id, e.outcome) for e in events(policy) if e.phase == "result"]
    assert outcomes == [("viewer-turn", "refused"), ("operator-turn", "ok")]
    (switched,) = policy.published(CONTROL)
    assert isinstance(switched, Control)
    assert switched.command == SceneSwitch(scene="gaming")
    assert switched.turn_id == "operator-turn"


async def test_an_expression_chosen_by_a_tool_shows_with_the_reply() -> None:
    backend = ToolCallingBackend([ToolCall("c", "set_expression", {"expression": "surprised"})])
    policy = harness(backend)
    await policy.send(chat("make a surprised face!"))
    assert "surprised" in final(policy).expressions


async def test_describe_view_tells_the_latest_observation() -> None:
    backend = ToolCallingBackend([ToolCall("c", "describe_view", {})])
    policy = harness(backend)
    seen = VisionObservation(
        session_id="camera-session", seq=0, source="camera", width=640, height=480,
        description="I see one face; the picture is bright, mostly blue.",
        objects=[SeenObject(label="face")],
    )  # fmt: skip
    await policy.send(seen, chat("what do you see?"))
    (_, result) = events(policy)
    assert result.result == seen.description, "the latest of any session when its own has none"


async def test_no_tools_are_offered_once_the_rounds_are_used_up() -> None:
    backend = ToolCallingBackend([ToolCall("c", "time", {})])
    policy = harness(backend, max_tool_rounds=0)
    await policy.send(chat("what time is it?"))
    assert events(policy) == []
    assert backend.requests[0][1] is None


async def test_a_crash_after_the_tools_ran_does_not_run_them_again() -> None:
    backend = ToolCallingBackend([ToolCall("c", "dice", {"sides": 6})])
    policy = harness(backend)
    line = chat("roll a die")
    policy.crash_after(publishes=3)  # the call, its result, then the reply's first token
    with pytest.raises(SimulatedCrash):
        await policy.send(line)
    await policy.restart()
    await policy.send(line)
    assert [e.phase for e in events(policy)] == ["call", "result"], "the tool ran once"
    assert final(policy).reply_text.startswith("The tool said: Rolled a d6: ")


async def test_the_time_is_told_in_the_characters_time_zone() -> None:
    backend = ToolCallingBackend([ToolCall("c", "time", {})])
    policy = harness(backend, timezone="Asia/Tokyo")
    await policy.send(chat("what time is it?"))
    (_, result) = events(policy)
    assert result.outcome == "ok"
    assert result.result.endswith("(JST).")


def test_tool_markup_written_as_text_is_not_spoken() -> None:
    def spoken(pieces: list[str]) -> str:
        markup = MarkupFilter()
        return "".join(markup.feed(piece) for piece in pieces) + markup.flush()

    assert spoken(
        ['Let me check...{"name": "tool_re', 'sponse", "arguments": {"a": "}"}}', " Done!"]
    ) == ("Let me check... Done!")
    assert spoken(['[happy] Hmm ["thinking", "dice"] a four.']) == "[happy] Hmm  a four."
    assert (
        spoken(["Ok <tool_call>\n{}\n</tool", "_call> so 3 < 4 and {x}"]) == "Ok  so 3 < 4 and {x}"
    )
    assert spoken(['Sure {"name": "unfinished']) == "Sure "


async def test_words_the_model_copied_from_the_schema_are_left_out_of_a_call() -> None:
    async def publish(event: ToolEvent) -> None:
        pass

    runner = ToolRunner(BUILTIN_TOOLS, publish, timeout_s=1)
    copied = {"expression": "surprised", "required": ["expression"], "type": "object"}
    ran = await runner.run(ToolCall("x", "set_expression", copied), context(), False, "r0c0")
    assert ran.outcome == "ok"


async def test_a_time_zone_the_line_did_not_ask_for_is_not_used() -> None:
    async def publish(event: ToolEvent) -> None:
        pass

    runner = ToolRunner(BUILTIN_TOOLS, publish, timeout_s=1)
    utc = context(now=lambda: datetime.now(UTC))
    call = ToolCall("x", "time", {"timezone": "America/New_York"})
    invented = await runner.run(call, replace(utc, said="what time is it?"), False, "r0c0")
    asked = await runner.run(call, replace(utc, said="what time is it in New York?"), False, "r0c1")
    assert invented.result.endswith("(UTC).")
    assert asked.result.endswith(("(EST).", "(EDT)."))


# --- routed tool calling (the bundled model's) -------------------------------------------------


class RoutedBackend(ToolCallingBackend):
    """A llama.cpp-like backend: writes the arguments of the call it is asked for."""

    def __init__(self, arguments: dict[str, Any] | None) -> None:
        super().__init__([])
        self.arguments = arguments
        self.asked: list[tuple[str, Messages]] = []

    async def call_tool(
        self, messages: Messages, tools: Any, name: str, options: Generation
    ) -> ToolCall:
        self.asked.append((name, messages))
        shown = [tool["function"]["name"] for tool in tools]
        assert shown == [name], "only the chosen tool is shown"
        return ToolCall("call-1", name, self.arguments, None if self.arguments else "not JSON")


@pytest.fixture(scope="module")
def gate() -> ToolGate:
    return ToolGate(Embedder(), BUILTIN_TOOLS)


def routed(backend: RoutedBackend, gate: ToolGate, **overrides: Any) -> StageHarness[PolicyStage]:
    settings = PolicySettings(retry_backoff_ms=0, tool_calling="routed", **overrides)
    return StageHarness(lambda bus: PolicyStage(settings, backend, bus, gate=gate))


async def test_routed_the_line_picks_the_tool_and_the_model_writes_its_arguments(
    gate: ToolGate,
) -> None:
    backend = RoutedBackend({"sides": 20})
    policy = routed(backend, gate)
    await policy.send(chat("roll a d20 for me", turn="t1"), chat("how are you today?", turn="t2"))
    assert [name for name, _ in backend.asked] == ["dice"], "chit-chat calls nothing"
    assert backend.asked[0][1][-1]["content"] == "viewer (in chat): «roll a d20 for me»"
    call, result = events(policy)
    assert (call.tool, call.arguments, result.outcome) == ("dice", {"sides": 20}, "ok")
    assert all(tools is None for _, tools in backend.requests), "nothing offered natively"
    first, second = (messages for messages, _ in backend.requests)
    assert first[-1]["role"] == "tool", "the reply is written with the result"
    assert all(m["role"] != "tool" for m in second)


async def test_routed_a_call_the_model_got_wrong_is_left_out_of_the_reply(
    gate: ToolGate,
) -> None:
    backend = RoutedBackend(None)  # its arguments did not parse
    policy = routed(backend, gate)
    await policy.send(chat("roll a d20 for me"))
    assert [(e.phase, e.outcome) for e in events(policy)] == [("call", None), ("result", "error")]
    ((messages, _),) = backend.requests
    assert all(m["role"] != "tool" and not m.get("tool_calls") for m in messages)


async def test_routed_a_result_that_is_the_answer_is_said_as_it_is(gate: ToolGate) -> None:
    backend = RoutedBackend({"sides": 20})
    policy = routed(backend, gate, tool_filler_after_ms=60_000)  # no filler: the tool is quick
    await policy.send(chat("roll a d20 for me"))
    (_, result) = events(policy)
    assert final(policy).reply_text.startswith(f"{result.result} The tool said: ")
    assert backend.prefixes == [f"{result.result} "], "the model goes on from it"
