"""LLM backends behind one small interface: stream a chat reply, token by token.

- llamacpp: llama-cpp-python in this process, with a GGUF from a package (offline default);
- openai:   any OpenAI-compatible server (llama.cpp server, vLLM, LM Studio);
- ollama:   an Ollama server, through the ollama client.

Given tools, a backend may answer with tool calls instead of (or after some) text: the
stream then yields ToolCall items. Tool exchanges travel in the messages in one neutral
form (services.policy.tools.wire), which each backend puts in its server's shape.
"""

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from services.errors import ConfigError, StageStartError
from services.models.bundled import resolve_gguf
from services.policy.settings import PolicySettings
from services.policy.tools.wire import (
    Messages as Messages,
)
from services.policy.tools.wire import (
    ToolCall,
    ToolCallParser,
    ToolSpecs,
    for_ollama,
    for_openai,
    openai_tool_calls,
    read_arguments,
)

PREFILL_BATCH = 64
"""Prompt tokens evaluated at once: ~250 ms on two cores, the longest a cancelled request
keeps the model (64 costs ~3% of the speed of one big batch)."""


class BackendUnavailable(StageStartError, RuntimeError):
    """The backend does not answer; the message names the setting to fix."""


class BackendFailed(RuntimeError):
    """One generation failed (worth a retry)."""


@dataclass(frozen=True)
class Generation:
    temperature: float
    max_tokens: int
    seed: int
    aside: bool = False
    """Work beside the conversation (a memory summary): the embedded model does it in a
    context of its own, so the conversation's prompt stays in its cache for the next turn
    (a summary cancelled by a turn used to leave that turn ~400 tokens to evaluate again)."""


class ChatBackend(Protocol):
    name: str

    async def check(self) -> None:
        """Raise BackendUnavailable unless the backend answers."""
        ...

    def stream(
        self,
        messages: Messages,
        options: Generation,
        prefix: str = "",
        tools: ToolSpecs | None = None,
    ) -> AsyncIterator[str | ToolCall]:
        """The reply to `messages`, token by token. With a prefix: the rest of a reply that
        began with it (a turn taken over after a crash goes on from what was said). With
        tools: the model may call them (ToolCall items, once each is complete)."""
        ...


@runtime_checkable
class ToolCaller(Protocol):
    """A backend that can write the arguments of a call of a tool chosen for it (routed
    tool calling, for models too small to choose)."""

    async def call_tool(
        self, messages: Messages, tools: ToolSpecs, name: str, options: Generation
    ) -> ToolCall: ...


def routes_tools(settings: PolicySettings, backend: ChatBackend) -> bool:
    """Whether tools are routed (the gate chooses) rather than offered to the model; a
    backend that cannot write a chosen call is a setting to fix."""
    if settings.tool_calling == "native":
        return False
    if settings.tool_calling == "auto":
        return settings.backend == "llamacpp"
    if not isinstance(backend, ToolCaller):
        raise ConfigError(
            f"MARIONETTE_POLICY_TOOL_CALLING=routed needs the llamacpp backend (not "
            f"{settings.backend}); use native, or auto"
        )
    return True


def with_prefix(messages: Messages, prefix: str) -> Messages:
    """For servers without a raw prompt: the reply so far as a last assistant message,
    which llama.cpp's server, vLLM and Ollama continue."""
    return [*messages, {"role": "assistant", "content": prefix}] if prefix else messages


async def complete(backend: ChatBackend, messages: Messages, options: Generation) -> str:
    """The whole reply as text (no tools offered)."""
    pieces = [piece async for piece in backend.stream(messages, options)]
    return "".join(p for p in pieces if isinstance(p, str))


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self._llm: Any = None
        self._aside_llm: Any = None  # for Generation.aside, made on first use
        # For tool calls (call_tool), made on first use: its prompt (every tool declared)
        # stays in its own cache, whatever the conversation and the summaries do.
        self._tools_llm: Any = None
        self._lock = threading.Lock()  # one generation at a time: llama.cpp is not reentrant
        self._loading = asyncio.Lock()

    async def check(self) -> None:
        async with self._loading:
            if self._llm is None:
                await asyncio.to_thread(self._load)

    def _load(self) -> None:
        try:
            import llama_cpp  # noqa: F401 (the message below, rather than a traceback)
        except ImportError:
            raise BackendUnavailable(
                "MARIONETTE_POLICY_BACKEND=llamacpp needs llama-cpp-python: "
                "pip install 'llama-cpp-python==0.3.36' (or pick another backend)"
            ) from None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = resolve_gguf(self.settings.model)
        llm = self._context(path)
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendUnavailable(
                f"{path} has no chat template (tokenizer.chat_template): use a chat model"
            )

        def special(token: int) -> str:
            return str(llm.detokenize([token], special=True).decode(errors="replace"))

        # The model's own template, as create_chat_completion uses it, rendered here so
        # that a reply can be continued from a prefix.
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=special(llm.token_eos()),
            bos_token=special(llm.token_bos()),
        )  # fmt: skip
        self._llm = llm

    def _context(self, path: Path, n_batch: int = 512) -> Any:
        from llama_cpp import Llama

        return Llama(
            model_path=str(path),
            n_ctx=self.settings.context_size,
            n_batch=n_batch,
            n_threads=self.settings.threads,
            # Mapped: a restarted stage (or a second replica, or the aside context) finds
            # the file in the page cache and shares its pages. (The file was just written
            # when its parts were joined, so even a first start seldom reads it from disk.)
            use_mmap=True,
            verbose=False,
        )

    def _for(self, options: Generation) -> Any:
        if not options.aside:
            return self._llm
        if self._aside_llm is None:
            # Small batches: its logits buffer is n_batch x vocabulary floats.
            self._aside_llm = self._context(resolve_gguf(self.settings.model), PREFILL_BATCH)
        return self._aside_llm

    def _prompt(
        self, messages: Messages, prefix: str, max_tokens: int, tools: ToolSpecs | None = None
    ) -> tuple[list[int], int]:
        # The model's own template renders tools and tool exchanges (Qwen: <tools> in the
        # system prompt, <tool_call> and <tool_response> blocks).
        rendered = self._formatter(messages=messages, tools=tools or None)  # type: ignore[arg-type]
        text = rendered.prompt + prefix
        tokens: list[int] = self._llm.tokenize(text.encode(), add_bos=False, special=True)
        said = len(self._llm.tokenize(prefix.encode(), add_bos=False)) if prefix else 0
        return tokens, max(1, max_tokens - said)

    def _prefill(self, llm: Any, prompt: list[int], stop: threading.Event) -> bool:
        """Evaluate the prompt (all but its last token, which the completion evaluates
        to sample from) in batches of PREFILL_BATCH, reusing what the model's cache holds
        of it; False if stopped meanwhile. In one call to llama.cpp a long prompt could
        not be stopped: a summary or a warm-up, cancelled because a turn came, would make
        that turn wait for all of it (seconds on two cores)."""
        held = llm.input_ids[: llm.n_tokens]
        common = 0
        for cached, wanted in zip(held, prompt, strict=False):
            if cached != wanted:
                break
            common += 1
        llm.n_tokens = min(common, len(prompt) - 1)  # llm.eval drops the cache after it
        for start in range(llm.n_tokens, len(prompt) - 1, PREFILL_BATCH):
            if stop.is_set():
                return False
            llm.eval(prompt[start : min(start + PREFILL_BATCH, len(prompt) - 1)])
        return not stop.is_set()

    async def call_tool(
        self, messages: Messages, tools: ToolSpecs, name: str, options: Generation
    ) -> ToolCall:
        """The arguments of a call of tool `name` for the last message: the model is shown
        the tools (the caller gives just that one: a short prompt) and its reply is begun
        for it as that call; it writes the arguments. In a context of its own, so the
        conversation's prompt stays cached. A tool without arguments is called without
        asking the model."""
        if not _has_parameters(tools, name):
            return ToolCall("call-1", name, {})
        await self.check()
        # No space after the colon: the model's own next token is ' {'.
        begun = f'<tool_call>\n{{"name": "{name}", "arguments":'

        def generate() -> str:
            with self._lock:
                rendered = self._formatter(messages=messages, tools=tools)  # type: ignore[arg-type]
                text = rendered.prompt + begun
                prompt = self._llm.tokenize(text.encode(), add_bos=False, special=True)
                if self._tools_llm is None:
                    self._tools_llm = self._context(
                        resolve_gguf(self.settings.model), PREFILL_BATCH
                    )
                llm = self._tools_llm
                self._prefill(llm, prompt, threading.Event())
                out = llm.create_completion(
                    prompt=prompt, temperature=0.0, max_tokens=options.max_tokens,
                    seed=options.seed, stop=["</tool_call>", "\n"],
                )  # fmt: skip
                return str(out["choices"][0]["text"])

        try:
            written = await asyncio.to_thread(generate)
        except Exception as exc:
            raise BackendFailed(str(exc)) from exc
        return read_arguments("call-1", name, written)

    async def stream(
        self,
        messages: Messages,
        options: Generation,
        prefix: str = "",
        tools: ToolSpecs | None = None,
    ) -> AsyncIterator[str | ToolCall]:
        await self.check()
        parser = ToolCallParser() if tools else None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def generate() -> None:
            try:
                with self._lock:
                    prompt, max_tokens = self._prompt(messages, prefix, options.max_tokens, tools)
                    llm = self._for(options)
                    if not self._prefill(llm, prompt, stop):
                        loop.call_soon_threadsafe(queue.put_nowait, None)
                        return
                    chunks = llm.create_completion(
                        prompt=prompt,
                        temperature=options.temperature,
                        max_tokens=max_tokens,
                        seed=options.seed,
                        stream=True,
                    )
                    for chunk in chunks:
                        if stop.is_set():
                            break
                        text = chunk["choices"][0]["text"]
                        if text:
                            loop.call_soon_threadsafe(queue.put_nowait, text)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except Exception as exc:
                loop.call_soon_threadsafe(queue.put_nowait, BackendFailed(str(exc)))

        worker = loop.run_in_executor(None, generate)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if parser is None:
                    yield item
                    continue
                for piece in parser.feed(item):
                    yield piece
            if parser is not None:
                for piece in parser.flush():
                    yield piece
        finally:
            stop.set()  # a caller that stops reading stops the generation too
            await asyncio.gather(worker, return_exceptions=True)


class OpenAICompatibleBackend:
    name = "openai"

    def __init__(self, settings: PolicySettings) -> None:
        from openai import AsyncOpenAI

        self.settings = settings
        self._client = AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or "not-needed",
            timeout=settings.request_timeout_s,
            max_retries=0,  # retries are the stage's, with its own backoff
        )

    async def check(self) -> None:
        try:
            await self._client.models.list()
        except Exception as exc:
            raise BackendUnavailable(
                f"no OpenAI-compatible server answers at MARIONETTE_POLICY_BASE_URL="
                f"{self.settings.base_url} ({type(exc).__name__}: {exc}); start it, or fix "
                "the setting (it usually ends in /v1)"
            ) from None

    async def stream(
        self,
        messages: Messages,
        options: Generation,
        prefix: str = "",
        tools: ToolSpecs | None = None,
    ) -> AsyncIterator[str | ToolCall]:
        extra: dict[str, Any] = {"tools": tools} if tools else {}
        calls: dict[int, dict[str, str]] = {}  # by index: id, name, arguments so far
        try:
            response = await self._client.chat.completions.create(
                model=self.settings.model,
                messages=for_openai(with_prefix(messages, prefix)),  # type: ignore[arg-type]
                temperature=options.temperature,
                max_tokens=options.max_tokens,
                seed=options.seed,
                stream=True,
                **extra,
            )
            async for chunk in response:  # type: ignore[union-attr]
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta.content:
                    yield delta.content
                for part in delta.tool_calls or ():
                    # A call arrives in pieces: its id and name first, its arguments
                    # (JSON text) in fragments after.
                    call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = part.id or call["id"]
                    if part.function is not None:
                        call["name"] += part.function.name or ""
                        call["arguments"] += part.function.arguments or ""
        except Exception as exc:
            raise BackendFailed(f"{type(exc).__name__}: {exc}") from exc
        for assembled in openai_tool_calls(calls):
            yield assembled


class OllamaBackend:
    name = "ollama"

    def __init__(self, settings: PolicySettings) -> None:
        from ollama import AsyncClient

        self.settings = settings
        self._client = AsyncClient(host=settings.base_url, timeout=settings.request_timeout_s)

    async def check(self) -> None:
        from ollama import ResponseError

        try:
            await self._client.show(self.settings.model)
        except ResponseError as exc:
            raise BackendUnavailable(
                f"Ollama at {self.settings.base_url} has no model "
                f"MARIONETTE_POLICY_MODEL={self.settings.model!r} ({exc.error}): "
                f"run `ollama pull {self.settings.model}` or fix the setting"
            ) from None
        except Exception as exc:
            raise BackendUnavailable(
                f"no Ollama answers at MARIONETTE_POLICY_BASE_URL={self.settings.base_url} "
                f"({type(exc).__name__}: {exc}); start it (`ollama serve`) or fix the setting"
            ) from None

    async def stream(
        self,
        messages: Messages,
        options: Generation,
        prefix: str = "",
        tools: ToolSpecs | None = None,
    ) -> AsyncIterator[str | ToolCall]:
        count = 0
        try:
            parts = await self._client.chat(
                model=self.settings.model,
                messages=for_ollama(with_prefix(messages, prefix)),
                tools=tools or None,
                stream=True,
                options={
                    "temperature": options.temperature,
                    "num_predict": options.max_tokens,
                    "num_ctx": self.settings.context_size,
                    "seed": options.seed,
                },
            )
            async for part in parts:
                if part.message.content:
                    yield part.message.content
                for call in part.message.tool_calls or ():
                    # Ollama sends each call whole, its arguments an object, with no id.
                    count += 1
                    yield ToolCall(f"call-{count}", call.function.name,
                                   dict(call.function.arguments))  # fmt: skip
        except Exception as exc:
            raise BackendFailed(f"{type(exc).__name__}: {exc}") from exc


def _has_parameters(tools: ToolSpecs, name: str) -> bool:
    for tool in tools:
        if tool["function"]["name"] == name:
            return bool(tool["function"]["parameters"].get("properties"))
    return True


def make_backend(settings: PolicySettings) -> ChatBackend:
    if settings.backend == "openai":
        return OpenAICompatibleBackend(settings)
    if settings.backend == "ollama":
        return OllamaBackend(settings)
    return LlamaCppBackend(settings)
