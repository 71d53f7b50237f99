"""The script that the LLM stand-ins (openai.py, ollama.py) follow for tool calls.

A stand-in has no model, so what it "decides" is scripted, the same way for both wire
protocols:

- the last message is a user message, the request offers tools, and a `ToolRule`'s
  pattern matches that message: the answer is the rule's call(s), two or more being
  parallel calls in one response;
- the last messages are tool results: the answer is text quoting them ("The tool said:
  ..."), so a test sees that the result travelled back to the model;
- anything else: the stand-in's scripted text reply.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScriptedCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolRule:
    """When the last user message matches `pattern` (searched, case-insensitive), call
    `calls`. The rule fires only if the request offers every tool it calls: a model cannot
    call a tool it was not given, so a backend that forgets `tools` gets plain text."""

    pattern: str
    calls: tuple[ScriptedCall, ...]

    @classmethod
    def calling(
        cls, pattern: str, name: str, arguments: dict[str, Any] | None = None
    ) -> "ToolRule":
        return cls(pattern, (ScriptedCall(name, arguments or {}),))


def text_of(content: Any) -> str:
    """A message's text: OpenAI also allows a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def scripted_calls(
    rules: Sequence[ToolRule], messages: Sequence[dict[str, Any]], offered: set[str]
) -> list[ScriptedCall]:
    if not offered or not messages or messages[-1].get("role") != "user":
        return []
    said = text_of(messages[-1].get("content"))
    for rule in rules:
        if re.search(rule.pattern, said, re.IGNORECASE) and all(
            call.name in offered for call in rule.calls
        ):
            return list(rule.calls)
    return []


def trailing_tool_results(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The contents of the tool messages at the end of the conversation, in order."""
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, text_of(message.get("content")))
    return results


def quoting(results: list[str], template: str) -> str:
    return template.format(results=" / ".join(results))


def word_pieces(text: str) -> list[str]:
    """Text as a model streams it: a word (with the space before it) at a time."""
    return re.findall(r"\s*\S+", text) or [text]


def fragments(text: str, size: int = 5) -> list[str]:
    """JSON arguments cut into short pieces, as OpenAI streams them (never whole)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
