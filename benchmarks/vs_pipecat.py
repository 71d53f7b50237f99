"""Marionette against pipecat 1.14, voice to voice, on the same models in the same run.

    python -m benchmarks.vs_pipecat [--questions N] [--quick] [--json] [--logs DIR]

Both systems hear the same Piper-spoken questions (services.bench.utterances), streamed in
real time as 20 ms frames, and answer with the same models: faster-whisper tiny.en (int8,
CPU), Qwen2.5-Coder-0.5B Q4_K_M through llama.cpp, the Piper voice joe-us. The LLM gets the
same prompt on both sides (the bundled persona's system prompt and few-shot turns, then the
question, in a fresh conversation each time), Marionette's policy max_tokens and temperature.

- Marionette: the real pipeline as `marionette bench` runs it (local_system starts Redis and
  the asr, policy, tts, avatar and playback stages); run_turns speaks one question per call
  and times it from the streams (TurnResult.parts, whatever parts it has).
- pipecat: benchmarks.pipecat_side, in this process, in two configurations: Silero VAD with
  stop_secs 0.6 and no turn model ("pipecat vad 0.6 s"), and pipecat's default, Smart Turn v3
  after a 0.2 s VAD stop ("pipecat smart turn"). Each configuration has its own
  llama_cpp.server (2 threads, n_ctx 2048, started and stopped here), so that, like
  Marionette's model, each sees every question once: llama.cpp reuses the KV cache of the
  prompt before, and a shared server would have the question evaluated already for
  whichever configuration asked second.

Voice to voice, on both sides: from the end of speech (the last speech sample of the
question, placed in time by when the frame holding it was pushed, less the samples after
it) to the first reply audio ready to play: Marionette's first tts.chunk added to Redis,
pipecat's first TTSAudioRawFrame reaching the end of its pipeline. Each system takes one
untimed warm-up turn; then, question by question, each system answers in turn, the order
rotated every question, so no system always goes first or right after another.

The totals compare; the parts show where each system spends its time, and their
boundaries differ: Marionette's LLM first token is the first token it publishes, after the
persona's leading emotion tag ([happy]) is taken out, pipecat's is the model's first piece
of text (the tag's bracket), and pipecat's TTS drops the tag with a text transform.

Where the comparison may favour one side (Marionette's settings as they were written):
- End of turn: Marionette's asr runs Smart Turn v3.2 after 100 ms of silence and, when
  the turn sounds finished, publishes the transcript at once (preemptive): the reply is
  prepared while it waits out the rest (finished_silence_ms, 500 ms; 1.5 s when it sounds
  unfinished), and its first audio counts no earlier than that end ("held for end of
  turn"). pipecat asks the LLM only once its stop strategy has ended the turn: 0.6 s of
  VAD silence and the transcript, or a 0.2 s VAD stop, Smart Turn and the transcript (an
  unfinished verdict, which Piper's flat voice draws, waits up to 3 s of silence).
- Marionette's policy runs llama.cpp in its own process; pipecat reaches a llama_cpp.server
  over HTTP (JSON, SSE, and uvicorn's event loop beside the two compute threads).
- Whisper: Marionette decodes greedily (beam_size 1) with 2 threads; pipecat's
  WhisperSTTService keeps faster-whisper's defaults (beam 5, 4 CTranslate2 threads on two
  cores) and pads each segment with 0.5 s of silence.
- TTS: Marionette speaks the first unit as soon as it is complete (a clause, or the words
  before a phrase-starting word like "because", after 4 words);
  pipecat's TTS waits for a whole sentence (its default SENTENCE aggregation), and, when the
  reply is one sentence, for the end of the LLM's response.
- pipecat runs in one process with no bus: Marionette pays its Redis hops and runs the
  avatar and playback stages besides (they share the CPU), and its policy moderates the
  input and holds each clause for a takeover check; pipecat has no output transport, its
  first audio is timed where a transport would take it.
- Both share the machine's cores (two here), and both stay loaded throughout: while one
  answers, the other idles (Marionette's stage processes and Redis; pipecat's pipelines,
  whose idle Silero VAD hears nothing, and its llama servers). Other work on the machine
  skews both: each turn reports the cores other processes kept busy meanwhile.
Prints figures; asserts nothing.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from loguru import logger
from rich.console import Console
from rich.table import Table

from benchmarks.cpu_share import OtherLoad
from benchmarks.figures import stop_child
from services.bench.command import BENCH_STAGES
from services.bench.live import run_turns
from services.bench.timeline import percentile
from services.bench.utterances import Utterance, synthesize
from services.bus import BusSettings, load_bus_settings
from services.bus.redis_server import free_port
from services.models.bundled import resolve_gguf
from services.policy.persona import load_persona_file
from services.policy.settings import PolicySettings
from services.system import local_system

if TYPE_CHECKING:
    from benchmarks.pipecat_side import PipecatVoice

MARIONETTE = "marionette"
SERVER_ALIAS = "qwen"
SETTLE_S = 1.0
"""Quiet between two turns, so one system's tail work does not run into the next turn."""
TOTAL = "voice-to-voice"

progress = Console(stderr=True, log_path=False)


@dataclass
class Turn:
    system: str
    question: int  # 0 is the warm-up
    text: str
    heard: str
    parts: dict[str, float]  # seconds
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    other_cores: float | None = None  # busy outside this benchmark's processes meanwhile


@dataclass(frozen=True)
class Summary:
    system: str
    part: str
    turns: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    other_cores: float | None = None  # mean over the turns; on the total's row only


@dataclass
class Report:
    questions: int
    cpus: int | None
    load_average: dict[str, float]
    turns: list[Turn]
    summary: list[Summary]
    ratio_to_marionette: dict[str, dict[str, float]]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(turns: list[Turn], systems: list[str]) -> list[Summary]:
    """Per system and part, over the timed turns that did not fail: the total first, then
    the parts in the order the system gave them."""
    rows = []
    for system in systems:
        timed = [t.parts for t in turns if t.system == system and t.question and not t.error]
        parts = [TOTAL] + [p for p in dict.fromkeys(k for ps in timed for k in ps) if p != TOTAL]
        loads = [
            t.other_cores for t in turns
            if t.system == system and t.question and not t.error and t.other_cores is not None
        ]  # fmt: skip
        for part in parts:
            values = [ps[part] * 1000 for ps in timed if part in ps]
            if values:
                rows.append(
                    Summary(system, part, len(values), percentile(values, 50),
                            percentile(values, 95), sum(values) / len(values),
                            sum(loads) / len(loads) if loads and part == TOTAL else None)
                )  # fmt: skip
    return rows


def ratios(summary: list[Summary]) -> dict[str, dict[str, float]]:
    """Each pipecat configuration's voice to voice over Marionette's (above 1: slower)."""
    totals = {s.system: s for s in summary if s.part == TOTAL}
    base = totals.get(MARIONETTE)
    if base is None:
        return {}
    return {
        name: {"p50": row.p50_ms / base.p50_ms, "mean": row.mean_ms / base.mean_ms}
        for name, row in totals.items()
        if name != MARIONETTE
    }


def persona_prompt(settings: PolicySettings) -> list[dict[str, str]]:
    """What Marionette's policy puts before a new session's first question."""
    persona = load_persona_file(settings.persona_file)
    return [{"role": "system", "content": persona.system_prompt()}, *persona.few_shot()]


@asynccontextmanager
async def llama_server(model: Path, threads: int, context: int, log: Path) -> AsyncIterator[str]:
    """A llama_cpp.server child answering at the URL yielded; stopped on exit."""
    port = free_port()
    with log.open("wb") as out:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--model_alias", SERVER_ALIAS, "--host", "127.0.0.1", "--port", str(port),
            "--n_threads", str(threads), "--n_ctx", str(context),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        yield url
    finally:
        await stop_child(child)


async def wait_for_server(url: str, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{url}/models")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"llama_cpp.server did not answer in {timeout_s:.0f} s; see {log}")


@contextmanager
def marionette(log: Path) -> Iterator[BusSettings]:
    """Redis and Marionette's bench stages, as `marionette bench` starts them."""
    bus = load_bus_settings().model_copy(update={"redis_url": None})
    with log.open("w") as out:

        def write(stage: str, line: str) -> None:
            out.write(f"{stage:>8} | {line}\n")
            out.flush()

        with local_system(bus, dict.fromkeys(BENCH_STAGES, 1), write, spares=False) as (live, _):
            yield live


def fields_of(result: object) -> dict[str, Any]:
    """A TurnResult's fields, whatever they are now (its module is being extended)."""
    data = asdict(result) if is_dataclass(result) and not isinstance(result, type) else {}
    return data or dict(vars(result))


async def marionette_turn(live: BusSettings, number: int, utterance: Utterance) -> Turn:
    [result] = await run_turns(live, [utterance], warmup=0)
    data = fields_of(result)
    known = ("text", "heard", "parts", "error")
    extra = {k: v for k, v in data.items() if k not in known}
    return Turn(MARIONETTE, number, utterance.text, data.get("heard", ""),
                dict(data.get("parts") or {}), data.get("error", ""), extra)  # fmt: skip


async def pipecat_turn(voice: "PipecatVoice", number: int, utterance: Utterance) -> Turn:
    result = await voice.turn(utterance)
    return Turn(voice.config.name, number, utterance.text, result.heard, result.parts,
                result.error, {"early_turn_stops": result.early_turn_stops,
                               "thrown_away_replies": result.thrown_away_replies})  # fmt: skip


def show(turn: Turn) -> None:
    kind = "warm-up" if turn.question == 0 else f"q{turn.question}"
    total = turn.parts.get(TOTAL)
    timing = f"{total * 1000:.0f} ms" if total is not None else f"[red]{turn.error}[/]"
    other = "" if turn.other_cores is None else f" (other load {turn.other_cores:.1f} cores)"
    progress.log(f"{kind} {turn.system}: heard {turn.heard!r} -> {timing}{other}")


async def compare(questions: int, logs: Path) -> Report:
    # pipecat logs through loguru (and greets on import): into its own file, errors aside.
    logger.remove()
    logger.add(logs / "pipecat.log", level="INFO", mode="w")
    logger.add(sys.stderr, level="ERROR")
    from benchmarks.pipecat_side import CONFIGS, PipecatVoice

    load_start = os.getloadavg()[0]
    settings = PolicySettings()
    utterances = synthesize(questions + 1)  # the first is the warm-up
    systems = [MARIONETTE, *(config.name for config in CONFIGS)]
    turns: list[Turn] = []
    other_load = OtherLoad()
    async with AsyncExitStack() as stack:
        progress.log(f"starting Marionette's stages and a llama_cpp.server per pipecat "
                     f"configuration (logs in {logs})")  # fmt: skip
        live = stack.enter_context(marionette(logs / "marionette.log"))
        model = resolve_gguf(settings.model)
        voices: dict[str, PipecatVoice] = {}
        for number, config in enumerate(CONFIGS, 1):
            # A server each: llama.cpp reuses the KV cache of the prompt before, and the
            # configuration asked second would find the whole question evaluated already.
            server_log = logs / f"llama-server-{number}.log"
            url = await stack.enter_async_context(
                llama_server(model, settings.threads, settings.context_size, server_log)
            )
            await wait_for_server(url, server_log)
            voice = PipecatVoice(config, url, SERVER_ALIAS, persona_prompt(settings),
                                 settings.max_tokens, settings.temperature)  # fmt: skip
            await voice.start()
            stack.push_async_callback(voice.close)
            voices[config.name] = voice
        progress.log("pipecat's pipelines are running; one warm-up turn each, not counted")

        async def take(system: str, number: int) -> None:
            utterance = utterances[number]
            other_load.start()
            if system == MARIONETTE:
                turn = await marionette_turn(live, number, utterance)
            else:
                turn = await pipecat_turn(voices[system], number, utterance)
            turn.other_cores = other_load.cores()
            show(turn)
            turns.append(turn)
            await asyncio.sleep(SETTLE_S)

        for number in range(questions + 1):
            shift = number % len(systems)
            for system in systems[shift:] + systems[:shift]:
                await take(system, number)
    summary = summarize(turns, systems)
    return Report(
        questions=questions,
        cpus=os.cpu_count(),
        load_average={"start": load_start, "end": os.getloadavg()[0]},
        turns=turns,
        summary=summary,
        ratio_to_marionette=ratios(summary),
    )


def counted(turns: list[Turn]) -> dict[str, dict[str, int]]:
    """Per system, the sums of the counts and flags its timed turns carry besides the
    parts (pipecat's early turn ends and thrown-away replies; whatever Marionette's
    TurnResult counts, such as replies begun before the end of the turn)."""
    sums: dict[str, dict[str, int]] = {}
    for turn in (t for t in turns if t.question):
        for name, value in turn.extra.items():
            if isinstance(value, bool | int):
                row = sums.setdefault(turn.system, {})
                row[name] = row.get(name, 0) + int(value)
    return sums


def print_report(report: Report) -> None:
    out = Console()
    totals = Table(title=f"voice to voice over {report.questions} questions each (ms)")
    columns = ("system", "turns", "failed", "p50", "p95", "mean", "p50 / Marionette",
               "other load")  # fmt: skip
    for column in columns:
        totals.add_column(column, justify="left" if column == "system" else "right")
    for row in (s for s in report.summary if s.part == TOTAL):
        failed = sum(1 for t in report.turns if t.system == row.system and t.question and t.error)
        ratio = report.ratio_to_marionette.get(row.system, {}).get("p50")
        totals.add_row(
            row.system, str(row.turns), str(failed), f"{row.p50_ms:.0f}", f"{row.p95_ms:.0f}",
            f"{row.mean_ms:.0f}", "1.00" if row.system == MARIONETTE else f"{ratio or 0:.2f}",
            "-" if row.other_cores is None else f"{row.other_cores:.1f} cores",
            style="bold" if row.system == MARIONETTE else None,
        )  # fmt: skip
    out.print(totals)
    parts = Table(title="where the time goes (ms; each system's parts add up to its total)")
    for column in ("system", "part", "p50", "p95", "mean"):
        parts.add_column(column, justify="left" if column in ("system", "part") else "right")
    for row in (s for s in report.summary if s.part != TOTAL):
        parts.add_row(row.system, row.part, f"{row.p50_ms:.0f}", f"{row.p95_ms:.0f}",
                      f"{row.mean_ms:.0f}")  # fmt: skip
    out.print(parts)
    for turn in (t for t in report.turns if t.error):
        out.print(f"[red]failed[/] {turn.system} q{turn.question} {turn.text!r}: {turn.error}")
    for system, counts in counted(report.turns).items():
        out.print(f"{system}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    load = report.load_average
    out.print(
        f"{report.cpus} CPUs; load average {load['start']:.1f} at the start, "
        f"{load['end']:.1f} at the end. other load: cores kept busy by processes outside "
        "this benchmark during the turns (it skews the figures)"
    )


async def stoppable(work: Coroutine[Any, Any, Report]) -> Report:
    """`work`, cancelled by SIGTERM like Ctrl-C cancels it: it unwinds while everything
    else still runs, so the stages, the llama servers and pipecat's pipelines stop at once."""
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--questions", type=int, default=12, help="timed questions per system")
    parser.add_argument("--quick", action="store_true", help="2 questions each (a smoke run)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--logs", type=Path, default=Path(".marionette/vs_pipecat"),
        help="where the stages', the llama server's and pipecat's logs go",
    )  # fmt: skip
    args = parser.parse_args()
    questions = 2 if args.quick else args.questions
    if questions < 1:
        parser.error("--questions must be at least 1")
    args.logs.mkdir(parents=True, exist_ok=True)
    try:
        report = asyncio.run(stoppable(compare(questions, args.logs)))
    except asyncio.CancelledError:
        sys.exit(128 + signal.SIGTERM)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
