"""policy LLM latency: time to first token and decode speed per backend, prefix cache warm/cold.

    python -m benchmarks.llm_latency [--runs N] [--max-tokens N] [--ollama-url URL]

Backends, one after another, with the same questions and seeds:
- llamacpp: LlamaCppBackend, llama-cpp-python in this process, the bundled Qwen GGUF;
- openai:   OpenAICompatibleBackend against `python -m llama_cpp.server` started here, same GGUF;
- ollama:   OllamaBackend, only with --ollama-url or OLLAMA_HOST (no Ollama can run here).

Prompts are built like the policy stage builds them: the bundled persona's system prompt and
few-shot turns, then one viewer's question. warm: that prefix is the same on every call (as in
the live stage), so llama.cpp reuses what it evaluated and only the question is new. cold: a
random nonce opens the system prompt, so nothing past the chat template's first tokens can be
reused. A backend's warm calls all run before its cold ones (a cold call evicts the warm
prefix), after one untimed warm-up call.

TTFT: from the stream() call to the first non-empty piece. Decode tokens/s: pieces after the
first / time from the first piece to the last; a piece is one streamed chunk, about one token.
Prints figures; asserts nothing.
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from services.bus.redis_server import free_port
from services.models import prepare
from services.models.bundled import QWEN_05B
from services.policy.backends import (
    BackendUnavailable,
    ChatBackend,
    Generation,
    LlamaCppBackend,
    Messages,
    OllamaBackend,
    OpenAICompatibleBackend,
)
from services.policy.persona import BUNDLED_PERSONAS, Persona, load_persona_file
from services.policy.settings import PolicySettings
from services.policy.stage import Turn

CONTEXT = 2048
TEMPERATURE = 0.7
SERVER_ALIAS = "qwen"
COLUMNS = ("backend", "cache", "runs", "TTFT p50", "TTFT p95", "tok/s p50", "tok/s p95",
           "mean pieces")  # fmt: skip
WARMUP = "Hello Mari, can you hear me?"
QUESTIONS = [
    "What game are you playing today?", "Do you have a favorite song right now?",
    "How long have you been streaming?", "Can you say hi to my little brother?",
    "What do you eat after a long stream?", "Are you playing the new level tonight?",
    "Do you have any pets at home?", "Which character do you like most?",
    "What was the hardest boss you ever beat?", "Do you like rainy days or sunny days?",
    "What should I name my new cat?", "Can you recommend a cozy game for me?",
]  # fmt: skip


@dataclass(frozen=True)
class Sample:
    ttft_s: float
    pieces: int
    decode_s: float  # first piece to last piece


@dataclass(frozen=True)
class Cell:
    backend: str
    cache: str
    samples: list[Sample]


def prompt(persona: Persona, question: str, nonce: str | None = None) -> Messages:
    """As PolicyStage.prompt builds it for a chat turn with no memory yet."""
    system = persona.system_prompt()
    if nonce is not None:
        system = f"(stream {nonce})\n{system}"
    user = Turn("bench", "t", question, author="viewer42").as_user_message()
    return [
        {"role": "system", "content": system},
        *persona.few_shot(),
        {"role": "user", "content": user},
    ]


async def measure(backend: ChatBackend, messages: Messages, options: Generation) -> Sample:
    pieces, first, last = 0, 0.0, 0.0
    start = time.perf_counter()
    async for piece in backend.stream(messages, options):
        if not piece:
            continue
        last = time.perf_counter()
        if pieces == 0:
            first = last
        pieces += 1
    if pieces == 0:
        raise RuntimeError(f"{backend.name}: empty reply")
    return Sample(first - start, pieces, last - first)


async def bench(backend: ChatBackend, persona: Persona, runs: int, max_tokens: int) -> list[Cell]:
    await measure(backend, prompt(persona, WARMUP), Generation(TEMPERATURE, max_tokens, 0))
    cells = []
    for cache in ("warm", "cold"):
        samples = []
        for i in range(runs):
            nonce = uuid.uuid4().hex[:8] if cache == "cold" else None
            messages = prompt(persona, QUESTIONS[i % len(QUESTIONS)], nonce)
            samples.append(await measure(backend, messages, Generation(TEMPERATURE, max_tokens, i)))
        cells.append(Cell(backend.name, cache, samples))
    return cells


async def bench_llamacpp(args: argparse.Namespace, persona: Persona) -> list[Cell]:
    settings = PolicySettings(model=QWEN_05B.name, threads=args.threads, context_size=CONTEXT)
    backend = LlamaCppBackend(settings)
    start = time.perf_counter()
    await backend.check()
    print(f"llamacpp: model loaded in {time.perf_counter() - start:.1f} s")
    return await bench(backend, persona, args.runs, args.max_tokens)


class ServerFailed(RuntimeError):
    """llama_cpp.server exited or did not answer in time."""


@contextmanager
def llama_server(model: Path, threads: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A llama_cpp.server child process and its base URL; stopped on exit."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--model_alias", SERVER_ALIAS, "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", str(threads), "--n_ctx", str(CONTEXT),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield server, f"http://127.0.0.1:{port}/v1"
        except ServerFailed as exc:
            raise ServerFailed(f"{exc}; its log:\n{log.read_text()[-4000:]}") from None
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


async def wait_ready(backend: ChatBackend, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while server.poll() is None:
        try:
            return await backend.check()
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise ServerFailed("llama_cpp.server did not answer in 120 s") from None
            await asyncio.sleep(0.5)
    raise ServerFailed(f"llama_cpp.server exited with status {server.returncode}")


async def bench_openai(args: argparse.Namespace, persona: Persona, model: Path) -> list[Cell]:
    with llama_server(model, args.threads) as (server, url):
        backend = OpenAICompatibleBackend(
            PolicySettings(backend="openai", base_url=url, model=SERVER_ALIAS)
        )
        start = time.perf_counter()
        await wait_ready(backend, server)
        print(f"openai: llama_cpp.server at {url} ready in {time.perf_counter() - start:.1f} s")
        return await bench(backend, persona, args.runs, args.max_tokens)


async def bench_ollama(args: argparse.Namespace, persona: Persona) -> list[Cell]:
    if not args.ollama_url:
        print("ollama: skipped, no Ollama server can run here (set OLLAMA_HOST or --ollama-url)")
        return []
    url, model = args.ollama_url, args.ollama_model
    backend = OllamaBackend(PolicySettings(backend="ollama", base_url=url, model=model))
    try:
        await backend.check()
    except BackendUnavailable as exc:
        print(f"ollama: skipped, {exc}")
        return []
    return await bench(backend, persona, args.runs, args.max_tokens)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def report(cells: list[Cell], args: argparse.Namespace, model: Path) -> None:
    table = Table(title="policy LLM latency (a piece is one streamed chunk, about one token)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("backend", "cache") else "right")
    for cell in cells:
        ttft = [s.ttft_s * 1000 for s in cell.samples]
        rates = [(s.pieces - 1) / s.decode_s for s in cell.samples if s.pieces > 1 and s.decode_s]
        row = [f"{pct(ttft, 50):.0f} ms", f"{pct(ttft, 95):.0f} ms"]
        row += [f"{pct(rates, q):.1f}" for q in (50, 95)] if rates else ["-", "-"]
        pieces = float(np.mean([s.pieces for s in cell.samples]))
        table.add_row(cell.backend, cell.cache, str(len(cell.samples)), *row, f"{pieces:.1f}")
    Console(width=100).print(table)
    print(
        f"model {model.name}, {args.threads} threads, n_ctx {CONTEXT}, max_tokens "
        f"{args.max_tokens}, temperature {TEMPERATURE}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}\nTTFT: call to first piece. tok/s: pieces after the first / "
        "first-to-last piece time; p95 is the fast end.\nmean pieces: per reply (the model "
        "often stops before max_tokens)."
    )


async def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    persona = load_persona_file(BUNDLED_PERSONAS / "marionette.toml")
    model = prepare(QWEN_05B)
    cells = await bench_llamacpp(args, persona)
    cells += await bench_openai(args, persona, model)
    cells += await bench_ollama(args, persona)
    report(cells, args, model)
    print(f"total {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="questions per backend and cache")
    parser.add_argument("--max-tokens", type=int, default=48, help="longest reply, in tokens")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp CPU threads")
    parser.add_argument(
        "--ollama-url", default=os.environ.get("OLLAMA_HOST"), help="an Ollama to measure too"
    )
    parser.add_argument("--ollama-model", default="qwen2.5:0.5b", help="its model name")
    args = parser.parse_args()
    # A plain `kill` unwinds too, so the llama_cpp.server child is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
