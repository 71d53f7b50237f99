"""Tool calls on the wire: the neutral message form, and each server's shape of it.

The neutral form is OpenAI's with the arguments as an object:
- the model's call: {"role": "assistant", "content": text said first,
  "tool_calls": [{"id", "type": "function", "function": {"name", "arguments": {...}}}]};
- its result: {"role": "tool", "tool_call_id", "name", "content"}.
llama.cpp's chat templates (Qwen's) read that form as it is; OpenAI-compatible servers want
the arguments as JSON text; Ollama wants the call without id or type.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, Any]]
ToolSpecs = list[dict[str, Any]]
"""Tools as OpenAI's `tools` field declares them: {"type": "function", "function": {...}}."""


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for. arguments None: they were not a JSON object (error
    says why); the call is answered with that error, so the model can try again."""

    id: str
    name: str
    arguments: dict[str, Any] | None
    error: str | None = None


def read_arguments(call_id: str, name: str, written: str) -> ToolCall:
    """A call whose arguments the model wrote after `"arguments": ` (the JSON object first;
    what follows it, the call's closing brace, is left)."""
    try:
        value, _ = json.JSONDecoder().raw_decode(written.lstrip())
    except json.JSONDecodeError as exc:
        return ToolCall(call_id, name, None, f"arguments are not JSON ({exc.msg})")
    if not isinstance(value, dict):
        return ToolCall(call_id, name, None, "arguments must be a JSON object")
    return ToolCall(call_id, name, value)


def parse_arguments(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """JSON text of arguments as the model wrote it, or (None, why not)."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        return None, f"arguments are not JSON ({exc.msg})"
    if not isinstance(value, dict):
        return None, "arguments must be a JSON object"
    return value, None


def openai_tool_calls(calls: dict[int, dict[str, str]]) -> list[ToolCall]:
    """The calls an OpenAI stream assembled (by index: id, name, argument text)."""
    found = []
    for index in sorted(calls):
        call = calls[index]
        arguments, error = parse_arguments(call["arguments"])
        found.append(ToolCall(call["id"] or f"call-{index}", call["name"], arguments, error))
    return found


def for_openai(messages: Messages) -> Messages:
    """Arguments as JSON text, as the OpenAI API has them."""
    out = []
    for message in messages:
        if message.get("tool_calls"):
            calls = [
                {**c, "function": {**c["function"],
                                   "arguments": json.dumps(c["function"]["arguments"])}}
                for c in message["tool_calls"]
            ]  # fmt: skip
            message = {**message, "tool_calls": calls}
        elif message.get("role") == "tool":
            message = {k: v for k, v in message.items() if k != "name"}
        out.append(message)
    return out


def for_ollama(messages: Messages) -> Messages:
    """Calls as Ollama has them: a function (name, arguments object), no id; a tool's
    result names the tool."""
    out = []
    for message in messages:
        if message.get("tool_calls"):
            calls = [{"function": c["function"]} for c in message["tool_calls"]]
            message = {**message, "tool_calls": calls}
        elif message.get("role") == "tool":
            message = {"role": "tool", "content": message["content"],
                       "tool_name": message.get("name", "")}  # fmt: skip
        out.append(message)
    return out


def exchange(said: str, calls: Iterable[ToolCall], results: Iterable[str]) -> Messages:
    """The messages of one round of calls: the model's calls (after what it said first),
    then each call's result."""
    calls = list(calls)
    asked = {
        "role": "assistant",
        "content": said,
        "tool_calls": [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments or {}}}
            for c in calls
        ],
    }  # fmt: skip
    answers = [
        {"role": "tool", "tool_call_id": c.id, "name": c.name, "content": r}
        for c, r in zip(calls, results, strict=True)
    ]
    return [asked, *answers]


OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.S)


class ToolCallParser:
    """Finds <tool_call>{"name": ..., "arguments": {...}}</tool_call> blocks in a model's
    streamed text (Qwen's and Hermes' format, which llama.cpp's templates prompt for):
    text outside them passes through; text that may be the start of a block is held."""

    def __init__(self) -> None:
        self.held = ""
        self.count = 0

    def feed(self, text: str) -> list[str | ToolCall]:
        self.held += text
        out: list[str | ToolCall] = []
        while True:
            start = self.held.find(OPEN)
            if start < 0:
                cut = len(self.held) - _partial_suffix(self.held, OPEN)
                ready, self.held = self.held[:cut], self.held[cut:]
                if ready:
                    out.append(ready)
                return out
            if start > 0:
                out.append(self.held[:start])
                self.held = self.held[start:]
            match = _BLOCK.match(self.held)
            if match is None:
                return out  # the block is not closed yet
            out.append(self._call(match.group(1)))
            self.held = self.held[match.end() :].lstrip("\n")

    def flush(self) -> list[str | ToolCall]:
        """The end of the reply: an unclosed block is read as a call if it parses (small
        models stop before the closing tag), else dropped."""
        held, self.held = self.held, ""
        if held.startswith(OPEN):
            body = held[len(OPEN) :]
            call = self._call(body)
            return [call] if call.arguments is not None else []
        return [held] if held else []

    def _call(self, body: str) -> ToolCall:
        self.count += 1
        call_id = f"call-{self.count}"
        try:
            data = json.loads(body.strip())
        except json.JSONDecodeError as exc:
            return ToolCall(call_id, "", None, f"the call is not JSON ({exc.msg})")
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return ToolCall(call_id, "", None, 'a call is {"name": ..., "arguments": {...}}')
        arguments = data.get("arguments", {})
        if isinstance(arguments, str):
            arguments, error = parse_arguments(arguments)
            return ToolCall(call_id, data["name"], arguments, error)
        if not isinstance(arguments, dict):
            return ToolCall(call_id, data["name"], None, "arguments must be a JSON object")
        return ToolCall(call_id, data["name"], arguments)


def _partial_suffix(text: str, tag: str) -> int:
    """How many of text's last characters could begin tag."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


MARKUP_TAGS = ("<tool_call>", "<tool_response>", "</tool_call>", "</tool_response>")


class MarkupFilter:
    """Takes tool markup out of a reply's text: JSON objects and lists ({"name": ...},
    ["a", "b"]) and <tool_call>/<tool_response> blocks. A small model that has seen tool
    exchanges in its prompt sometimes writes them back as text, and they must not be
    spoken. Expression tags ([happy]) are not JSON and pass."""

    def __init__(self) -> None:
        self.held = ""  # what may be the start of markup
        self.depth = 0  # inside JSON: open brackets
        self.in_string = False
        self.escaped = False
        self.closing: str | None = None  # inside a tag block: the tag that ends it

    def feed(self, text: str) -> str:
        out: list[str] = []
        for char in text:
            out.append(self._char(char))
        return "".join(out)

    def flush(self) -> str:
        """The end of the reply: markup left open is dropped, a held start is text."""
        held, self.held = self.held, ""
        inside = self.depth > 0 or self.closing is not None
        self.depth, self.closing = 0, None
        return "" if inside else held

    def _char(self, char: str) -> str:
        if self.depth:
            self._json(char)
            return ""
        if self.closing is not None:
            self.held += char
            if self.held.endswith(self.closing):
                self.held, self.closing = "", None
            return ""
        if self.held:
            return self._after_held(char)
        if char in "{[<":
            self.held = char
            return ""
        return char

    def _after_held(self, char: str) -> str:
        held = self.held + char
        if held[0] in "{[":
            if char.isspace() and held.strip() == held[0]:
                self.held = held  # `{ "name"`: wait for the quote
                return ""
            self.held = ""
            if char == '"':
                self.depth, self.in_string = 1, True
                return ""
            return held
        if any(tag.startswith(held) for tag in MARKUP_TAGS):
            if held in MARKUP_TAGS:
                self.held = ""
                if not held.startswith("</"):
                    self.closing = "</" + held[1:]
            else:
                self.held = held
            return ""
        self.held = ""
        return held

    def _json(self, char: str) -> None:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
        elif char == '"':
            self.in_string = True
        elif char in "{[":
            self.depth += 1
        elif char in "}]":
            self.depth -= 1
