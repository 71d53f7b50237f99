"""tts stage latency per backend: real-time factor, and first token -> first tts.chunk.

    python -m benchmarks.tts_latency [--replies N] [--rate TOKENS_PER_S] [--backends piper,kokoro]

1. Real-time factor per backend (piper, kokoro): synthesis time / audio duration over
   sentences of a few lengths, after one warm-up.
2. First audio: the real TtsService under a running StageRuntime (embedded Redis). A
   simulated LLM streams each reply word by word at a fixed rate into a queue that one
   task drains through TtsService.handle in order, as the stage's consumer would. Latency
   is from putting the first token to the return of the first tts.chunk publish of that
   turn. Measured with the early first fragment on (default) and effectively off.

Every backend is measured in the same run, so the ratios against Piper compare like with
like. Prints a table; asserts nothing.
"""

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable

from contracts import PolicyToken, TtsChunk
from contracts.limits import AUDIO_SAMPLE_WIDTH
from services.bus import StageRuntime, load_bus_settings
from services.bus.redis_server import EmbeddedRedis
from services.bus.settings import load_settings
from services.tts import stage as tts_stage
from services.tts.settings import TtsSettings
from services.tts.synthesizer import SpeechSynthesizer, make_synthesizer

SENTENCES = [
    "Hi there.",
    "Thanks for coming.",
    "That is a fun one.",
    "Let me think about that for a second.",
    "I really like the way you put that question.",
    "Honestly, the weather here has been strange all week long.",
    "We could try the other approach tomorrow, if everyone agrees to it.",
    "The stream starts at eight, so grab a snack and settle in with us tonight.",
    "My favourite part of the game is exploring the old ruins beyond the northern hills.",
    "When I was younger I spent whole summers reading adventure novels under a big oak "
    "tree behind the house.",
    "If you ask me, the best pizza has a thin crust, a little bit of basil, fresh "
    "mozzarella and absolutely no pineapple at all.",
    "There is a lot to unpack here, so let me start with the history, then the science, "
    "and finally what I personally think it all means for the rest of us.",
]

REPLIES = [
    "Oh wow, that is a really great question, and honestly I have thought about it a lot. "
    "The short answer is yes.",
    "Well, you know, I was not expecting that at all, but it makes a lot of sense. "
    "Tell me more about it.",
    "Hmm, let me think about this one for a moment, because it is tricky. "
    "I would pick the blue one.",
    "Ha, you caught me there, I really did forget to feed the virtual cat today. "
    "She is fine though.",
    "Okay so, about that game you mentioned, the first thing to know is how hard it is. "
    "Bring lots of potions.",
    "Right, so the way I see it, both options have their own good points. "
    "I lean towards the first.",
    "Honestly, I think that movie, the new one, was way better than everyone says. "
    "The ending was great.",
    "Oh no, that sounds like a really rough day for you, and I am sorry about it. "
    "Want to talk about it?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def real_time_factors(synthesizer: SpeechSynthesizer) -> list[float]:
    synthesizer.synthesize("Warming up the voice.")
    factors: list[float] = []
    for text in SENTENCES:
        start = time.perf_counter()
        speech = synthesizer.synthesize(text)
        elapsed = time.perf_counter() - start
        duration = len(speech.pcm) / (AUDIO_SAMPLE_WIDTH * speech.sample_rate)
        factors.append(elapsed / duration)
    return factors


async def stream_reply(
    service: tts_stage.TtsService, reply: str, turn_id: str, rate: float
) -> float:
    """Streams one reply through the service; returns when its first token was sent."""
    queue: asyncio.Queue[PolicyToken | None] = asyncio.Queue()

    async def consume() -> None:
        while (token := await queue.get()) is not None:
            await service.handle(token)

    consumer = asyncio.create_task(consume())
    words = reply.split(" ")
    sent = time.perf_counter()
    for index, word in enumerate(words):
        text = word if index == 0 else " " + word
        await queue.put(PolicyToken(session_id="bench", turn_id=turn_id, seq=index,
                                    index=index, text=text))  # fmt: skip
        await asyncio.sleep(1 / rate)
    n = len(words)
    final = PolicyToken(session_id="bench", turn_id=turn_id, seq=n, index=n, text="",
                        final=True, reply_text=reply, status="ok")  # fmt: skip
    await queue.put(final)
    await queue.put(None)
    await consumer
    return sent


async def first_audio(
    synthesizer: SpeechSynthesizer, fragment_words: int, replies: int, rate: float
) -> list[float]:
    service = tts_stage.TtsService(TtsSettings(first_fragment_words=fragment_words), synthesizer)
    published: dict[tuple[str | None, int], float] = {}
    real_publish: Callable[..., object] = tts_stage.chunks_out.publish

    async def recording_publish(message: TtsChunk, *, timeout_s: float = 30.0) -> bytes:
        entry_id = await real_publish(message, timeout_s=timeout_s)  # type: ignore[misc]
        published.setdefault((message.turn_id, message.index), time.perf_counter())
        return entry_id  # type: ignore[no-any-return]

    tts_stage.chunks_out.publish = recording_publish  # type: ignore[method-assign]
    try:
        latencies: list[float] = []
        for number in range(replies):
            turn_id = f"t-{fragment_words}-{number}-{uuid.uuid4().hex[:8]}"
            sent = await stream_reply(service, REPLIES[number % len(REPLIES)], turn_id, rate)
            latencies.append(published[(turn_id, 0)] - sent)
        return latencies
    finally:
        del tts_stage.chunks_out.publish  # back to the class method


Figures = dict[str, list[float]]  # column -> samples


async def measure_first_audio(
    synthesizers: dict[str, SpeechSynthesizer], replies: int, rate: float
) -> dict[str, Figures]:
    with EmbeddedRedis() as server:
        settings = load_bus_settings(redis_url=server.url)
        async with StageRuntime(tts_stage.stage, settings):
            figures: dict[str, Figures] = {}
            for name, synthesizer in synthesizers.items():
                await first_audio(synthesizer, 4, 1, rate)  # warm-up, not counted
                figures[name] = {
                    "first chunk": await first_audio(synthesizer, 4, replies, rate),
                    "fragment off": await first_audio(synthesizer, 50, replies, rate),
                }
    return figures


def table(figures: dict[str, Figures], baseline: str) -> list[str]:
    """p50 and p95 of each column, with the ratio to the baseline backend beside each."""
    columns = list(next(iter(figures.values())))
    ratio_width = 9
    header = f"{'backend':<8}" + "".join(
        f"{c + ' p' + str(q):>15}{'':{ratio_width}}" for c in columns for q in (50, 95)
    )
    lines = [header.rstrip(), "-" * len(header)]
    for name, figure in figures.items():
        cells = []
        for column in columns:
            for q in (50, 95):
                value = percentile(figure[column], q)
                base = percentile(figures[baseline][column], q)
                ratio = f" ({value / base:5.2f}x)" if name != baseline else " " * ratio_width
                cells.append(f"{value:15.{3 if column == 'RTF' else 0}f}{ratio}")
        lines.append(f"{name:<8}" + "".join(cells).rstrip())
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=8, help="replies per mode")
    parser.add_argument("--rate", type=float, default=30.0, help="LLM tokens per second")
    parser.add_argument("--backends", default="piper,kokoro", help="comma-separated, piper first")
    args = parser.parse_args()

    names = args.backends.split(",")
    synthesizers = {
        name: make_synthesizer(load_settings(TtsSettings, backend=name)) for name in names
    }
    figures: dict[str, Figures] = {
        name: {"RTF": real_time_factors(synthesizer)} for name, synthesizer in synthesizers.items()
    }
    audio = asyncio.run(measure_first_audio(synthesizers, args.replies, args.rate))
    for name, latencies in audio.items():
        figures[name].update({k: [v * 1000 for v in values] for k, values in latencies.items()})
    print(f"RTF: synthesis time / audio duration, {len(SENTENCES)} sentences after a warm-up.")
    print(
        f"first chunk: first token -> first tts.chunk in ms, {args.rate:g} tokens/s, "
        f"{args.replies} replies; fragment off: the same without the early first fragment."
    )
    print(f"Ratios are against {names[0]}, measured in the same run.\n")
    print("\n".join(table(figures, baseline=names[0])))


if __name__ == "__main__":
    main()
