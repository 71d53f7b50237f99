"""The LLM stand-ins' tool calls, driven by the real clients (`openai.AsyncOpenAI`,
`ollama.AsyncClient`): these test the stand-ins themselves, so that a backend tested
against them is tested against the wire protocols."""

import json
from typing import Any

import httpx
import ollama
import openai
import pydantic
import pytest

from tests.standins.ollama import OllamaStandIn, ollama_stand_in
from tests.standins.openai import OpenAIStandIn, openai_stand_in
from tests.standins.tool_rules import ScriptedCall, ToolRule

DICE: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "dice",
        "description": "Roll a die.",
        "parameters": {
            "type": "object",
            "properties": {"sides": {"type": "integer", "description": "How many faces."}},
            "required": ["sides"],
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "time",
        "description": "The streamer's local time.",
        "parameters": {"type": "object", "properties": {}},
    },
}
ROLL = ToolRule.calling(r"\broll\b", "dice", {"sides": 20})
ROLL_AND_TIME = ToolRule(
    r"roll.*and.*time", (ScriptedCall("dice", {"sides": 6}), ScriptedCall("time"))
)
ASK: list[dict[str, Any]] = [
    {"role": "system", "content": "You are Mari."},
    {"role": "user", "content": "Roll a d20 for me!"},
]


def openai_client(url: str, timeout: float = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=timeout)


async def streamed_openai(
    client: openai.AsyncOpenAI, messages: list[dict[str, Any]], **options: Any
) -> tuple[list[Any], dict[int, dict[str, str]], str, str | None]:
    """(chunks, tool calls by index reassembled from the deltas, text, finish_reason)."""
    create: Any = client.chat.completions.create  # plain dicts, as a backend sends them
    stream = await create(model="qwen2.5-0.5b", messages=messages, stream=True, **options)
    chunks = [chunk async for chunk in stream]
    calls: dict[int, dict[str, str]] = {}
    text, finish = "", None
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        text += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            if delta.function:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    return chunks, calls, text, finish


def assistant_turn(calls: dict[int, dict[str, str]]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in calls.values()
        ],
    }


# --- OpenAI-compatible ---------------------------------------------------------------------


async def test_openai_tool_call_streams_as_openai_does_and_its_result_comes_back() -> None:
    with openai_stand_in(OpenAIStandIn(rules=[ROLL])) as server:
        client = openai_client(server.url)
        chunks, calls, text, finish = await streamed_openai(client, ASK, tools=[DICE, TIME])
        assert (text, finish) == ("", "tool_calls")
        assert calls[0]["name"] == "dice"
        assert calls[0]["id"].startswith("call_")
        assert json.loads(calls[0]["arguments"]) == {"sides": 20}
        opening = chunks[0].choices[0].delta.tool_calls[0]
        assert (opening.type, opening.function.arguments) == ("function", "")
        fragments = [c for c in chunks[1:] if c.choices and c.choices[0].delta.tool_calls]
        assert len(fragments) >= 3, "arguments arrive in pieces"
        assert all(f.choices[0].delta.tool_calls[0].id is None for f in fragments)

        answered = [*ASK, assistant_turn(calls)]
        answered.append({"role": "tool", "tool_call_id": calls[0]["id"], "content": "17"})
        chunks, again, text, finish = await streamed_openai(client, answered, tools=[DICE])
        assert (text, finish, again) == ("The tool said: 17", "stop", {})
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3

        first, second = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
        assert first["tools"] == [DICE, TIME]
        assert first["stream"] is True
        sent_call = second["messages"][-2]["tool_calls"][0]["function"]
        assert sent_call == {"name": "dice", "arguments": '{"sides": 20}'}
        assert second["messages"][-1] == answered[-1]


async def test_openai_sdk_stream_helper_accumulates_the_stand_ins_chunks() -> None:
    """The SDK's own accumulator (chat.completions.stream) agrees with the stream's shape;
    it only takes strict tools, which the stand-in checks as OpenAI does."""
    strict = json.loads(json.dumps(DICE))
    strict["function"] |= {"strict": True}
    with openai_stand_in(OpenAIStandIn(rules=[ROLL])) as server:
        client = openai_client(server.url)
        with pytest.raises(openai.BadRequestError, match="additionalProperties"):
            await streamed_openai(client, ASK, tools=[strict])
        strict["function"]["parameters"]["additionalProperties"] = False
        helper: Any = client.chat.completions.stream
        async with helper(
            model="qwen2.5-0.5b",
            messages=ASK,
            tools=[strict],
            stream_options={"include_usage": True},
        ) as stream:
            final = await stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert (call.function.name, call.function.parsed_arguments) == ("dice", {"sides": 20})
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None
    assert final.usage.total_tokens > 0


async def test_openai_parallel_calls_come_as_index_0_and_1() -> None:
    with openai_stand_in(OpenAIStandIn(rules=[ROLL_AND_TIME])) as server:
        client = openai_client(server.url)
        asked = [{"role": "user", "content": "roll a d6 and tell me the time"}]
        _, calls, _, finish = await streamed_openai(client, asked, tools=[DICE, TIME])
        assert finish == "tool_calls"
        assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
            ("dice", {"sides": 6}),
            ("time", {}),
        ]
        assert calls[0]["id"] != calls[1]["id"]

        results = [
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "4"},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "21:30"},
        ]
        _, _, text, _ = await streamed_openai(
            client, [*asked, assistant_turn(calls), *results], tools=[DICE, TIME]
        )
        assert text == "The tool said: 4 / 21:30"

        _, one, _, _ = await streamed_openai(
            client, asked, tools=[DICE, TIME], parallel_tool_calls=False
        )
        assert [c["name"] for c in one.values()] == ["dice"]


async def test_openai_not_streamed_and_without_tools() -> None:
    with openai_stand_in(OpenAIStandIn(rules=[ROLL])) as server:
        client = openai_client(server.url)
        create: Any = client.chat.completions.create
        done = await create(model="qwen2.5-0.5b", messages=ASK, tools=[DICE])
        (call,) = done.choices[0].message.tool_calls
        assert (call.function.name, json.loads(call.function.arguments)) == ("dice", {"sides": 20})
        assert done.choices[0].finish_reason == "tool_calls"
        # No tools offered: a model cannot call one, so the scripted text comes.
        _, calls, text, _ = await streamed_openai(client, ASK)
        assert (calls, text) == ({}, "[happy] Hello chat!")
        _, calls, text, _ = await streamed_openai(client, ASK, tools=[DICE], tool_choice="none")
        assert (calls, text) == ({}, "[happy] Hello chat!")
        assert [m.id for m in (await client.models.list()).data] == ["qwen2.5-0.5b"]


def called(call_id: str, arguments: Any = "{}") -> dict[str, Any]:
    """An assistant message that called dice."""
    function = {"name": "dice", "arguments": arguments}
    call = {"id": call_id, "type": "function", "function": function}
    return {"role": "assistant", "tool_calls": [call]}


def result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "17"}


@pytest.mark.parametrize(
    ("messages", "tools", "says"),
    [
        (
            [*ASK, result("call_x")],
            [DICE],
            "must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            [*ASK, called("call_a"), result("call_b")],
            [DICE],
            "'tool_call_id' of 'call_b' not found",
        ),
        (
            [*ASK, called("call_a"), {"role": "user", "content": "well?"}],
            [DICE],
            "did not have response messages: call_a",
        ),
        (
            [*ASK, called("call_a", {"sides": 20}), result("call_a")],
            [DICE],
            "expected a string, but got an object",
        ),
        (ASK, [], "Invalid 'tools': empty array"),
        (ASK, [{"type": "function", "function": {"name": "roll dice"}}], "does not match pattern"),
    ],
)
async def test_openai_rejects_what_a_strict_server_rejects(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], says: str
) -> None:
    with openai_stand_in() as server:
        with pytest.raises(openai.BadRequestError) as rejected:
            await streamed_openai(openai_client(server.url), messages, tools=tools)
        assert rejected.value.status_code == 400
        assert says in rejected.value.message
        assert server.rejections[0]["error"]["type"] == "invalid_request_error"


async def test_openai_faults_fail_be_slow_and_miss_models() -> None:
    with openai_stand_in(OpenAIStandIn(fail_next=1, first_chunk_delay_s=0.6)) as server:
        client = openai_client(server.url, timeout=0.2)
        with pytest.raises(openai.InternalServerError):
            await streamed_openai(client, ASK)
        # Headers come at once (as llama.cpp's server and vLLM), the first chunk late:
        # the client's read timeout fires while reading it (the SDK wraps it).
        with pytest.raises(openai.APITimeoutError):
            await streamed_openai(client, ASK)
        server.first_chunk_delay_s = 0.0
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            await client.chat.completions.create(
                model="gpt-9", messages=[{"role": "user", "content": "hi"}]
            )
        _, _, text, _ = await streamed_openai(client, ASK)
        assert text == "[happy] Hello chat!"


# --- Ollama ------------------------------------------------------------------------------


async def test_ollama_tool_call_streams_as_one_chunk_and_its_result_comes_back() -> None:
    with ollama_stand_in(OllamaStandIn(rules=[ROLL])) as server:
        client = ollama.AsyncClient(host=server.url)
        parts = [
            p async for p in await client.chat("llama3.2", ASK, tools=[DICE, TIME], stream=True)
        ]
        with_calls = [p for p in parts if p.message.tool_calls]
        assert len(with_calls) == 1
        assert parts[-1].done
        assert not parts[-1].message.tool_calls
        (call,) = with_calls[0].message.tool_calls or []
        assert (call.function.name, call.function.arguments) == ("dice", {"sides": 20})

        answered = [
            *ASK,
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "17", "tool_name": "dice"},
        ]
        parts = [
            p async for p in await client.chat("llama3.2", answered, tools=[DICE], stream=True)
        ]
        assert "".join(p.message.content or "" for p in parts) == "The tool said: 17"
        assert sum(1 for p in parts if p.message.content) >= 3

        first, second = [r for r in server.requests if r["path"] == "/api/chat"]
        assert first["tools"][0]["function"]["name"] == "dice"
        sent_call = second["messages"][-2]["tool_calls"][0]["function"]
        assert sent_call == {"name": "dice", "arguments": {"sides": 20}}, "an object"
        assert second["messages"][-1] == {"role": "tool", "content": "17", "tool_name": "dice"}


async def test_ollama_parallel_calls_and_not_streamed() -> None:
    with ollama_stand_in(OllamaStandIn(rules=[ROLL_AND_TIME])) as server:
        client = ollama.AsyncClient(host=server.url)
        asked = [{"role": "user", "content": "roll a d6 and tell me the time"}]
        parts = [
            p async for p in await client.chat("llama3.2", asked, tools=[DICE, TIME], stream=True)
        ]
        calls = [c for p in parts for c in p.message.tool_calls or []]
        assert [(c.function.name, c.function.arguments) for c in calls] == [
            ("dice", {"sides": 6}),
            ("time", {}),
        ]
        whole = await client.chat("llama3.2", asked, tools=[DICE, TIME])
        assert [c.function.name for c in whole.message.tool_calls or []] == ["dice", "time"]
        assert whole.done
        assert whole.done_reason == "stop"
        plain = await client.chat("llama3.2", asked)  # no tools offered: text
        assert plain.message.content == "[happy] Hello chat!"


async def test_ollama_checks_as_ollama_does() -> None:
    with ollama_stand_in(OllamaStandIn(rules=[ROLL], capabilities=["completion"])) as server:
        client = ollama.AsyncClient(host=server.url)
        with pytest.raises(ollama.ResponseError, match="does not support tools") as refused:
            await client.chat("llama3.2", ASK, tools=[DICE])
        assert refused.value.status_code == 400
        with pytest.raises(ollama.ResponseError, match="not found") as missing:
            await client.chat("nope", ASK)
        assert missing.value.status_code == 404

        # OpenAI's string arguments: the ollama client refuses them before the wire...
        bad_call = {"function": {"name": "dice", "arguments": '{"sides": 20}'}}
        with pytest.raises(pydantic.ValidationError):
            await client.chat("llama3.2", [*ASK, {"role": "assistant", "tool_calls": [bad_call]}])
        # ...and the server, as Ollama's Go decoder does, when another client sends them.
        async with httpx.AsyncClient() as raw:
            said = {"role": "assistant", "content": "", "tool_calls": [bad_call]}
            body = {"model": "llama3.2", "messages": [*ASK, said]}
            answer = await raw.post(f"{server.url}/api/chat", json=body)
        assert answer.status_code == 400
        assert "cannot unmarshal string" in answer.json()["error"]


async def test_ollama_client_drops_what_its_models_do_not_know() -> None:
    """Wire facts for the backend: the client sends only some JSON-schema keywords of a
    tool, and a tool message's `tool_call_id` does not reach the server (`tool_name` does)."""
    rich = json.loads(json.dumps(DICE))
    rich["function"]["parameters"]["properties"]["sides"] |= {"minimum": 2, "default": 6}
    rich["function"]["parameters"]["additionalProperties"] = False
    with ollama_stand_in(OllamaStandIn(rules=[ROLL])) as server:
        client = ollama.AsyncClient(host=server.url)
        tool_message = {"role": "tool", "content": "17", "tool_name": "dice"}
        tool_message["tool_call_id"] = "call_1"
        await client.chat("llama3.2", [*ASK, tool_message], tools=[rich])
        (sent,) = [r for r in server.requests if r["path"] == "/api/chat"]
    assert sent["tools"][0]["function"]["parameters"] == DICE["function"]["parameters"]
    assert sent["messages"][-1] == {"role": "tool", "content": "17", "tool_name": "dice"}
