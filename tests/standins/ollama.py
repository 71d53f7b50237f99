"""A stand-in for an Ollama server: its HTTP API (/api/show, /api/chat NDJSON stream).

Ollama itself cannot be installed here; this speaks its wire protocol so the real `ollama`
client and the policy stage's OllamaBackend are tested end to end. It answers with a
scripted reply, records every request, and can be told to fail.

Tool calls follow Ollama's /api/chat: the request's `tools` (OpenAI's shape), a call
streamed as ONE message chunk carrying `tool_calls` (`function.arguments` an object, not
a JSON string; recent servers add `id` and `function.index`), then the `done: true` chunk
(`done_reason: "stop"`); the result comes back as a `role: "tool"` message (`tool_name`).
What is called is scripted by `rules` as for the OpenAI stand-in (tool_rules.py). Checked
as Ollama does: an unknown model (404), tools for a model without the "tools" capability
(400), and `arguments` that are not an object (400: Ollama's Go decoder refuses them).
"""

import itertools
import json
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
    quoting,
    scripted_calls,
    trailing_tool_results,
    word_pieces,
)

CREATED_AT = "2026-11-21T00:00:00Z"


@dataclass
class OllamaStandIn:
    models: set[str] = field(default_factory=lambda: {"llama3.2"})
    reply_tokens: list[str] = field(default_factory=lambda: ["[happy]", " Hello", " chat", "!"])
    rules: list[ToolRule] = field(default_factory=list)
    tool_reply: str = "The tool said: {results}"
    capabilities: list[str] = field(default_factory=lambda: ["completion", "tools"])
    fail_next: int = 0  # answer this many /api/chat requests with HTTP 500
    first_chunk_delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)  # the 4xx bodies answered
    url: str = ""


_call_ids = itertools.count(1)


def _problem(state: OllamaStandIn, body: dict[str, Any]) -> tuple[int, str] | None:
    model = body.get("model")
    if model not in state.models:
        return 404, f'model "{model}" not found, try pulling it first'
    if body.get("tools") and "tools" not in state.capabilities:
        return 400, f"registry.ollama.ai/library/{model}:latest does not support tools"
    for message in body.get("messages") or []:
        for call in message.get("tool_calls") or []:
            arguments = (call.get("function") or {}).get("arguments")
            if arguments is not None and not isinstance(arguments, dict):
                kind = "string" if isinstance(arguments, str) else type(arguments).__name__
                return 400, (
                    f"json: cannot unmarshal {kind} into Go struct field "
                    "ToolCallFunction.messages.tool_calls.function.arguments of type "
                    "api.ToolCallFunctionArguments"
                )
    return None


def _answer(state: OllamaStandIn, body: dict[str, Any]) -> tuple[list[ScriptedCall], list[str]]:
    messages = body.get("messages") or []
    offered = {
        name
        for tool in body.get("tools") or []
        if isinstance(name := (tool.get("function") or {}).get("name"), str)
    }
    calls = scripted_calls(state.rules, messages, offered)
    if calls:
        return calls, []
    results = trailing_tool_results(messages)
    if results:
        return [], word_pieces(quoting(results, state.tool_reply))
    return [], list(state.reply_tokens)


def _tool_calls(calls: list[ScriptedCall]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{next(_call_ids):08d}",
            "function": {"index": index, "name": call.name, "arguments": call.arguments},
        }
        for index, call in enumerate(calls)
    ]


def _handler(state: OllamaStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked NDJSON streaming, as Ollama does

        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            send_json(self, status, body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            state.requests.append({"path": self.path, **body})
            model = body.get("model") or body.get("name")
            if self.path == "/api/show":
                if model not in state.models:
                    self._json(404, {"error": f"model '{model}' not found"})
                else:
                    self._json(
                        200,
                        {
                            "modelfile": "",
                            "template": "{{ .Prompt }}",
                            "details": {"family": "stand-in", "format": "gguf"},
                            "model_info": {"general.architecture": "stand-in"},
                            "capabilities": state.capabilities,
                        },
                    )
                return
            if self.path != "/api/chat":
                self._json(404, {"error": "not found"})
                return
            if problem := _problem(state, body):
                state.rejections.append({"error": problem[1]})
                self._json(problem[0], {"error": problem[1]})
                return
            if state.fail_next > 0:
                state.fail_next -= 1
                self._json(500, {"error": "stand-in told to fail"})
                return
            calls, pieces = _answer(state, body)
            if body.get("stream", True):  # Ollama streams unless told not to
                self._stream(model, calls, pieces)
                return
            time.sleep(state.first_chunk_delay_s)
            message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
            if calls:
                message["tool_calls"] = _tool_calls(calls)
            self._json(200, {**self._done(model, len(pieces) or 1), "message": message})

        def _stream(self, model: str, calls: list[ScriptedCall], pieces: list[str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            time.sleep(state.first_chunk_delay_s)
            if calls:  # all parsed calls in one chunk, content empty
                self._part(model, {"content": "", "tool_calls": _tool_calls(calls)})
            for token in pieces:
                self._part(model, {"content": token})
            self._chunk(
                {
                    **self._done(model, len(pieces) or 1),
                    "message": {"role": "assistant", "content": ""},
                }
            )
            self.wfile.write(b"0\r\n\r\n")

        def _part(self, model: str, message: dict[str, Any]) -> None:
            self._chunk(
                {
                    "model": model,
                    "created_at": CREATED_AT,
                    "message": {"role": "assistant", **message},
                    "done": False,
                }
            )

        def _done(self, model: str, produced: int) -> dict[str, Any]:
            return {
                "model": model,
                "created_at": CREATED_AT,
                "done": True,
                "done_reason": "stop",
                "eval_count": produced,
            }

        def _chunk(self, line: dict[str, Any]) -> None:
            data = json.dumps(line).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


@contextmanager
def ollama_stand_in(state: OllamaStandIn | None = None) -> Iterator[OllamaStandIn]:
    state = state or OllamaStandIn()
    with serving(_handler(state)) as port:
        state.url = f"http://127.0.0.1:{port}"
        yield state
