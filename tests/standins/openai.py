"""A stand-in for an OpenAI-compatible server (OpenAI, llama.cpp's server, vLLM): the
HTTP API that the real `openai` client speaks, with tool calls.

Endpoints  `GET /v1/models`; `POST /v1/chat/completions` with `stream: true` (SSE:
           `data: {chunk}` events, then `data: [DONE]`) or `stream: false` (one JSON).
Behaviour  scripted by `rules` (see tool_rules.py): a tool call, streamed as OpenAI does
           (a first delta with `tool_calls[i].id`, `type`, `function.name` and empty
           `arguments`, then argument fragments, then `finish_reason: "tool_calls"`;
           parallel calls one after the other, index 0, 1, ...); text quoting tool results;
           else `reply_tokens`. `stream_options.include_usage` adds the usage chunk.
Checks     what a strict server rejects, with OpenAI's status and error body
           (`{"error": {"message", "type", "param", "code"}}`), so a client bug shows:
           a `tool` message that answers no earlier `tool_calls` id, an assistant
           `tool_calls` message left without its tool results, `arguments` that are not a
           string, an empty `tools` array, a tool schema that is not an object, a bad
           function name, a `strict` tool schema that allows other keys or leaves a
           property optional, `tool_choice` / `parallel_tool_calls` without tools,
           `stream_options` without streaming, an unknown model (404), a wrong key (401).
Faults     `fail_next` (HTTP 500s), `first_chunk_delay_s` (headers at once, then a wait,
           as a server evaluating a long prompt), `chunk_delay_s` (between chunks).

Every request body is recorded in `requests` (with its `path`); every 4xx body answered
in `rejections`; a stream the client dropped counts in `dropped_streams`.
"""

import itertools
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.standins.http import send_json, serving
from tests.standins.tool_rules import (
    ScriptedCall,
    ToolRule,
    fragments,
    quoting,
    scripted_calls,
    trailing_tool_results,
    word_pieces,
)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class OpenAIStandIn:
    # PolicySettings' default model name, so a test need not name one. Empty: any name
    # is served (llama.cpp's server ignores it).
    models: set[str] = field(default_factory=lambda: {"qwen2.5-0.5b"})
    reply_tokens: list[str] = field(default_factory=lambda: ["[happy]", " Hello", " chat", "!"])
    rules: list[ToolRule] = field(default_factory=list)
    tool_reply: str = "The tool said: {results}"
    api_key: str | None = None  # when set, requests must carry `Authorization: Bearer <it>`
    fail_next: int = 0  # answer this many chat requests with HTTP 500
    first_chunk_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    dropped_streams: int = 0
    url: str = ""  # the base URL a client takes, ending in /v1


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        }


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    awaiting: set[str] = set()  # ids of the open assistant tool_calls message
    answerable: set[str] = set()
    opened_at = -1
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise ApiError(
                400,
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                "'user', 'function', 'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
        if role != "tool" and awaiting:
            raise ApiError(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not "
                f"have response messages: {', '.join(sorted(awaiting))}",
                f"messages.[{opened_at}].role",
            )
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise ApiError(
                    400,
                    f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                    f"messages[{i}].tool_call_id",
                    "missing_required_parameter",
                )
            if opened_at < 0:
                raise ApiError(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",  # sic: OpenAI's spelling
                    f"messages.[{i}].role",
                )
            if call_id not in answerable:
                raise ApiError(
                    400,
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    "'tool_calls' of previous message.",
                    f"messages.[{i}].tool_call_id",
                )
            awaiting.discard(call_id)
            continue
        opened_at = -1
        if role == "assistant" and message.get("tool_calls") == []:
            raise ApiError(
                400,
                f"Invalid 'messages[{i}].tool_calls': empty array. Expected an array with "
                "minimum length 1, but got an empty array instead.",
                f"messages[{i}].tool_calls",
                "empty_array",
            )
        if role == "assistant" and message.get("tool_calls"):
            answerable = {_check_call(i, j, c) for j, c in enumerate(message["tool_calls"])}
            awaiting = set(answerable)
            opened_at = i
    if awaiting:
        raise ApiError(
            400,
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(sorted(awaiting))}",
            f"messages.[{opened_at}].role",
        )


def _check_call(i: int, j: int, call: Any) -> str:
    where = f"messages[{i}].tool_calls[{j}]"
    if not isinstance(call, dict):
        raise ApiError(400, f"Invalid type for '{where}': expected an object.", where)
    function = call.get("function") or {}
    fields = {
        "id": call.get("id"),
        "function.name": function.get("name"),
        "function.arguments": function.get("arguments"),
    }
    for name, value in fields.items():
        if value is None:
            raise ApiError(
                400,
                f"Missing required parameter: '{where}.{name}'.",
                f"{where}.{name}",
                "missing_required_parameter",
            )
        if not isinstance(value, str):
            kind = "an object" if isinstance(value, dict) else type(value).__name__
            raise ApiError(
                400,
                f"Invalid type for '{where}.{name}': expected a string, but got {kind} instead.",
                f"{where}.{name}",
                "invalid_type",
            )
    if call.get("type") != "function":
        raise ApiError(400, f"Missing required parameter: '{where}.type'.", f"{where}.type")
    return str(call["id"])


def _offered_tools(body: dict[str, Any]) -> set[str]:
    tools = body.get("tools")
    if tools is None:
        for option in ("tool_choice", "parallel_tool_calls"):
            if option in body:
                raise ApiError(
                    400,
                    f"Invalid value for '{option}': '{option}' is only allowed when "
                    "'tools' are specified.",
                    option,
                )
        return set()
    if not isinstance(tools, list) or not tools:
        raise ApiError(
            400,
            "Invalid 'tools': empty array. Expected an array with minimum length 1, but "
            "got an empty array instead.",
            "tools",
            "empty_array",
        )
    names: set[str] = set()
    for k, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise ApiError(
                400,
                f"Invalid value: '{tool.get('type')}'. Supported values are: 'function' "
                "and 'custom'.",
                f"tools[{k}].type",
                "invalid_value",
            )
        function = tool.get("function") or {}
        name = function.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME.match(name):
            raise ApiError(
                400,
                f"Invalid 'tools[{k}].function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                f"tools[{k}].function.name",
                "invalid_value",
            )
        schema = function.get("parameters")
        if schema is not None and (not isinstance(schema, dict) or schema.get("type") != "object"):
            got = schema.get("type") if isinstance(schema, dict) else None
            raise ApiError(
                400,
                f"Invalid schema for function '{name}': schema must be a JSON Schema of "
                f"'type: \"object\"', got 'type: \"{got}\"'.",
                f"tools[{k}].function.parameters",
                "invalid_function_parameters",
            )
        if function.get("strict") is True:
            _check_strict(name, k, schema or {})
        names.add(name)
    return names


def _check_strict(name: str, k: int, schema: dict[str, Any]) -> None:
    """Strict (structured-output) tools: OpenAI wants every property required and no
    others allowed (checked at the top level here)."""
    where = f"tools[{k}].function.parameters"
    if schema.get("additionalProperties") is not False:
        raise ApiError(
            400,
            f"Invalid schema for function '{name}': In context=(), 'additionalProperties' "
            "is required to be supplied and to be false.",
            where,
            "invalid_function_parameters",
        )
    missing = sorted(set(schema.get("properties") or {}) - set(schema.get("required") or []))
    if missing:
        raise ApiError(
            400,
            f"Invalid schema for function '{name}': In context=(), 'required' is required "
            f"to be supplied and to be an array including every key in properties. "
            f"Missing '{missing[0]}'.",
            where,
            "invalid_function_parameters",
        )


def _decide(state: OpenAIStandIn, body: dict[str, Any]) -> tuple[list[ScriptedCall], list[str]]:
    """The calls to make, or (none) the text pieces to say."""
    offered = _offered_tools(body)
    choice = body.get("tool_choice", "auto")
    messages = body["messages"]
    calls = [] if choice == "none" else scripted_calls(state.rules, messages, offered)
    if isinstance(choice, dict):  # a named function: the model must call it
        forced = (choice.get("function") or {}).get("name")
        if forced not in offered:
            raise ApiError(
                400,
                f"Invalid value for 'tool_choice': function '{forced}' not found in 'tools'.",
                "tool_choice",
            )
        calls = [c for c in calls if c.name == forced] or [ScriptedCall(str(forced))]
    elif choice == "required" and not calls:
        calls = [ScriptedCall(sorted(offered)[0])]
    if body.get("parallel_tool_calls") is False:
        calls = calls[:1]
    if calls:
        return calls, []
    results = trailing_tool_results(messages)
    if results:
        return [], word_pieces(quoting(results, state.tool_reply))
    return [], list(state.reply_tokens)


_ids = itertools.count(1)


def _call_json(call: ScriptedCall, call_id: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }


def _handler(state: OpenAIStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked SSE, as the real servers

        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            send_json(self, status, body)

        def _authorized(self) -> bool:
            if (
                state.api_key is None
                or self.headers.get("Authorization") == f"Bearer {state.api_key}"
            ):
                return True
            body = ApiError(401, "Incorrect API key provided.", code="invalid_api_key").body
            state.rejections.append(body)
            self._json(401, body)
            return False

        def do_GET(self) -> None:
            state.requests.append({"path": self.path})
            if self.path != "/v1/models":
                self._json(404, ApiError(404, f"Not found: {self.path}").body)
                return
            if self._authorized():
                models = [
                    {"id": m, "object": "model", "created": 0, "owned_by": "stand-in"}
                    for m in sorted(state.models or {"stand-in"})
                ]
                self._json(200, {"object": "list", "data": models})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = None
            state.requests.append({"path": self.path, **(body if isinstance(body, dict) else {})})
            if self.path != "/v1/chat/completions":
                self._json(404, ApiError(404, f"Not found: {self.path}").body)
                return
            if not self._authorized():
                return
            try:
                calls, pieces = self._validated(body)
            except ApiError as rejected:
                state.rejections.append(rejected.body)
                self._json(rejected.status, rejected.body)
                return
            if state.fail_next > 0:
                state.fail_next -= 1
                failed = ApiError(500, "The server had an error while processing your request.")
                failed.body["error"]["type"] = "server_error"
                self._json(500, failed.body)
                return
            assert body is not None
            answer = _Answer(f"chatcmpl-standin-{next(_ids)}", body["model"], calls, pieces)
            try:
                if body.get("stream"):
                    usage = (body.get("stream_options") or {}).get("include_usage")
                    self._stream(answer, bool(usage))
                else:
                    time.sleep(state.first_chunk_delay_s)
                    self._json(200, answer.completion())
            except (BrokenPipeError, ConnectionResetError):
                state.dropped_streams += 1
                self.close_connection = True

        def _validated(self, body: Any) -> tuple[list[ScriptedCall], list[str]]:
            if not isinstance(body, dict):
                raise ApiError(400, "We could not parse the JSON body of your request.")
            if not body.get("model"):
                raise ApiError(400, "you must provide a model parameter")
            if "stream_options" in body and not body.get("stream"):
                raise ApiError(
                    400,
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    "stream_options",
                )
            _check_messages(body.get("messages"))
            decided = _decide(state, body)
            if state.models and body["model"] not in state.models:
                raise ApiError(
                    404,
                    f"The model `{body['model']}` does not exist or you do not have access to it.",
                    code="model_not_found",
                )
            return decided

        def _stream(self, answer: "_Answer", include_usage: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            time.sleep(state.first_chunk_delay_s)
            for n, chunk in enumerate(answer.chunks(include_usage)):
                if n and state.chunk_delay_s:
                    time.sleep(state.chunk_delay_s)
                self._event(json.dumps(chunk))
            self._event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _event(self, data: str) -> None:
            event = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()

    return Handler


@dataclass
class _Answer:
    """One response, as chunks (streamed) or one completion (not streamed)."""

    id: str
    model: str
    calls: list[ScriptedCall]
    pieces: list[str]
    created: int = field(default_factory=lambda: int(time.time()))
    call_ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.call_ids = [f"call_standin{next(_ids):06d}" for _ in self.calls]

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.calls else "stop"

    def _usage(self) -> dict[str, int]:
        arguments = [fragments(json.dumps(c.arguments)) for c in self.calls]
        produced = len(self.pieces) + sum(len(a) + 2 for a in arguments)
        return {"prompt_tokens": 10, "completion_tokens": produced, "total_tokens": 10 + produced}

    def _chunk(self, delta: dict[str, Any], finish: str | None, usage: bool) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_standin",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage:
            chunk["usage"] = None  # every chunk but the last, when usage is asked for
        return chunk

    def chunks(self, include_usage: bool) -> Iterator[dict[str, Any]]:
        if self.calls:
            for index, (call, call_id) in enumerate(zip(self.calls, self.call_ids, strict=True)):
                opening = {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                delta: dict[str, Any] = {"tool_calls": [opening]}
                if index == 0:
                    delta = {"role": "assistant", "content": None, **delta}
                yield self._chunk(delta, None, include_usage)
                for piece in fragments(json.dumps(call.arguments)):
                    more = {"index": index, "function": {"arguments": piece}}
                    yield self._chunk({"tool_calls": [more]}, None, include_usage)
        else:
            start = {"role": "assistant", "content": "", "refusal": None}
            yield self._chunk(start, None, include_usage)
            for piece in self.pieces:
                yield self._chunk({"content": piece}, None, include_usage)
        yield self._chunk({}, self.finish_reason, include_usage)
        if include_usage:
            yield {**self._chunk({}, None, False), "choices": [], "usage": self._usage()}

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if self.calls else "".join(self.pieces),
            "refusal": None,
            "annotations": [],
        }
        if self.calls:
            message["tool_calls"] = [
                _call_json(c, i) for c, i in zip(self.calls, self.call_ids, strict=True)
            ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_standin",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self._usage(),
        }


@contextmanager
def openai_stand_in(state: OpenAIStandIn | None = None) -> Iterator[OpenAIStandIn]:
    state = state or OpenAIStandIn()
    with serving(_handler(state)) as port:
        state.url = f"http://127.0.0.1:{port}/v1"
        yield state
