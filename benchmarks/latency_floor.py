"""The serial floor of a spoken turn on this machine: each link of the chain alone, summed.

    python -m benchmarks.latency_floor [--questions N] [--json]

A spoken turn is a chain: the end of speech is noticed (the VAD, then the short pause
that starts the transcript), the audio is transcribed, the LLM reads the question and
writes up to the first speakable unit, and Piper speaks that unit. No link can start
before the one before it has ended, so on an idle machine their sum is the least
voice-to-voice time any scheduling of these models can reach; in the live pipeline the
other work (the end-of-turn model, the stages' own traffic, the rest of the reply) comes
on top. This is the budget behind `marionette bench`'s figures.

Each link is measured here, in this run, on the bench's questions (Piper-spoken,
services.bench.utterances), one at a time with nothing else running:
- endpointing: from the last speech sample to the endpointer's first pause event
  (webrtcvad, then speculate_after_ms of silence), in audio time, exactly;
- ASR: faster-whisper tiny.en on the audio the endpointer cut, in Whisper's 30 s window
  (the default) and in the short window (`MARIONETTE_ASR_SHORT_WINDOW=1`);
- LLM: the policy's embedded llama.cpp backend with the bundled persona, a fresh
  conversation per question whose prefix is already evaluated (as in a live session,
  where the memory before the new line is cached): the first piece of text, and the
  first speakable unit (the text without emotion tags, cut where tts would cut it);
- TTS: Piper speaking that unit.
Prints a row per question and the p50 and minimum of each link and of the sums.
"""

import argparse
import asyncio
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ParamSpec

from rich.console import Console
from rich.table import Table

from services.asr.endpointer import Endpointer, FinalReady
from services.asr.recognizer import FasterWhisperRecognizer
from services.asr.settings import AsrSettings
from services.asr.vad import make_vad
from services.bench.utterances import SPOKEN, Utterance, synthesize
from services.policy.backends import Generation, LlamaCppBackend, Messages
from services.policy.persona import load_persona_file
from services.policy.settings import PolicySettings
from services.tts.settings import TtsSettings
from services.tts.splitter import first_unit_end
from services.tts.synthesizer import make_synthesizer

FRAME_BYTES = 640  # 20 ms at 16 kHz, as capture sends them
P = ParamSpec("P")
TAG = re.compile(r"\[[a-z_]+\]\s*")


@dataclass
class Links:
    question: str
    endpointing_ms: float
    asr_ms: float
    asr_short_ms: float
    llm_first_piece_ms: float
    llm_first_unit_ms: float
    tts_first_unit_ms: float
    first_unit: str

    @property
    def floor_ms(self) -> float:
        return self.endpointing_ms + self.asr_ms + self.llm_first_unit_ms + self.tts_first_unit_ms

    @property
    def floor_short_ms(self) -> float:
        return self.floor_ms - self.asr_ms + self.asr_short_ms


def pause_event(utterance: Utterance, settings: AsrSettings) -> tuple[float, bytes]:
    """When (ms after the end of speech) the endpointer first reports a pause after the
    whole question, and the audio it hands to ASR then."""
    endpointer = Endpointer(settings, make_vad(settings), settings.unfinished_silence_ms)
    pcm = utterance.pcm + bytes(2 * 16_000)  # silence after the question
    speech_end_s = utterance.speech_end_sample / 16_000
    for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        heard_to_s = (start + FRAME_BYTES) / 32_000
        for event in endpointer.push(pcm[start : start + FRAME_BYTES], start / 32_000):
            if isinstance(event, FinalReady) and heard_to_s >= speech_end_s:
                return (heard_to_s - speech_end_s) * 1000, event.audio
    raise RuntimeError(f"no pause found after {utterance.text!r}")


async def llm_links(
    backend: LlamaCppBackend, base: Messages, question: str, seed: int
) -> tuple[float, float, str]:
    """ms to the first piece of text and to the first speakable unit, and that unit."""
    started = time.perf_counter()
    first_piece: float | None = None
    text = ""
    messages = [*base, {"role": "user", "content": question}]
    async for piece in backend.stream(messages, Generation(0.7, 120, seed)):
        first_piece = first_piece or (time.perf_counter() - started) * 1000
        text += piece
        spoken = TAG.sub("", text).lstrip()
        end = first_unit_end(spoken)
        if end:
            return first_piece, (time.perf_counter() - started) * 1000, spoken[:end].strip()
    # A reply shorter than a unit: it is one unit, complete at its end.
    spoken = TAG.sub("", text).strip()
    return first_piece or 0.0, (time.perf_counter() - started) * 1000, spoken


def timed(call: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> float:
    """ms the call takes."""
    started = time.perf_counter()
    call(*args, **kwargs)
    return (time.perf_counter() - started) * 1000


async def measure(count: int, console: Console) -> list[Links]:
    asr_settings = AsrSettings()
    console.print("loading tiny.en (both windows), Qwen, Piper; speaking the questions...")
    whisper = FasterWhisperRecognizer(asr_settings)
    whisper_short = FasterWhisperRecognizer(AsrSettings(short_window=True))
    policy = PolicySettings()
    persona = load_persona_file(policy.persona_file)
    backend = LlamaCppBackend(policy)
    await backend.check()
    voice = make_synthesizer(TtsSettings())
    utterances = synthesize(count)
    base: Messages = [{"role": "system", "content": persona.system_prompt()}, *persona.few_shot()]
    # Warm-ups: each model's first run allocates; the persona's prefix gets evaluated.
    whisper.transcribe(utterances[0].pcm)
    whisper_short.transcribe(utterances[0].pcm)
    await llm_links(backend, base, "Hello!", 0)
    voice.synthesize("Hello there.")
    rows = []
    for n, utterance in enumerate(utterances):
        endpointing_ms, audio = pause_event(utterance, asr_settings)
        asr_ms = timed(whisper.transcribe, audio)
        asr_short_ms = timed(whisper_short.transcribe, audio)
        first_piece, first_unit_ms, unit = await llm_links(backend, base, utterance.text, n + 1)
        tts_ms = timed(voice.synthesize, unit or "Okay.")
        rows.append(
            Links(utterance.text, endpointing_ms, asr_ms, asr_short_ms, first_piece,
                  first_unit_ms, tts_ms, unit)
        )  # fmt: skip
        console.print(f"{n + 1}: {utterance.text!r} -> {unit!r}: {rows[-1].floor_ms:.0f} ms")
    return rows


def report(rows: list[Links], console: Console) -> None:
    table = Table(title=f"the chain's links alone, {len(rows)} questions (ms)")
    for column in ("link", "p50", "min", "max"):
        table.add_column(column, justify="right" if column != "link" else "left")
    links = {
        "endpointing (VAD + pause)": [r.endpointing_ms for r in rows],
        "ASR, 30 s window": [r.asr_ms for r in rows],
        "ASR, short window": [r.asr_short_ms for r in rows],
        "LLM first piece": [r.llm_first_piece_ms for r in rows],
        "LLM first speakable unit": [r.llm_first_unit_ms for r in rows],
        "TTS first unit": [r.tts_first_unit_ms for r in rows],
        "floor (30 s window)": [r.floor_ms for r in rows],
        "floor (short window)": [r.floor_short_ms for r in rows],
    }
    for name, values in links.items():
        table.add_row(
            name, f"{statistics.median(values):.0f}", f"{min(values):.0f}", f"{max(values):.0f}"
        )
    console.print(table)
    console.print(
        "floor = endpointing + ASR + LLM first speakable unit + TTS first unit, each alone on "
        "an idle machine: no scheduling of these models answers sooner."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=len(SPOKEN))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()
    console = Console()
    rows = asyncio.run(measure(args.questions, console))
    report(rows, console)
    if args.json:
        print(json.dumps([asdict(r) | {"floor_ms": r.floor_ms} for r in rows], indent=1))


if __name__ == "__main__":
    main()
