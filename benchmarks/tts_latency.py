"""tts stage latency: synthesizer real-time factor, and first token -> first tts.chunk.

    python -m benchmarks.tts_latency [--replies N] [--rate TOKENS_PER_S]

1. Real-time factor per backend (today only piper): synthesis time / audio duration over
   sentences of a few lengths, after one warm-up.
2. First audio: the real TtsService under a running StageRuntime (embedded Redis). A
   simulated LLM streams each reply word by word at a fixed rate into a queue that one
   task drains through TtsService.handle in order, as the stage's consumer would. Latency
   is from putting the first token to the return of the first tts.chunk publish of that
   turn. Compared with the early first fragment on (default) and effectively off.

Prints figures; asserts nothing.
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
from services.tts import stage as tts_stage
from services.tts.settings import TtsSettings
from services.tts.synthesizer import PiperSynthesizer, SpeechSynthesizer

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


def summary(label: str, values: list[float], unit: str = "", scale: float = 1.0) -> str:
    p50, p95 = percentile(values, 50) * scale, percentile(values, 95) * scale
    return f"  {label:<28} p50 {p50:8.3f}{unit}  p95 {p95:8.3f}{unit}  (n={len(values)})"


async def run_first_audio(synthesizer: SpeechSynthesizer, replies: int, rate: float) -> None:
    with EmbeddedRedis() as server:
        settings = load_bus_settings(redis_url=server.url)
        async with StageRuntime(tts_stage.stage, settings):
            await first_audio(synthesizer, 4, 1, rate)  # warm-up, not counted
            early = await first_audio(synthesizer, 4, replies, rate)
            late = await first_audio(synthesizer, 50, replies, rate)
    print(f"\nFirst token -> first tts.chunk ({rate:g} tokens/s, {replies} replies each)")
    print(summary("early fragment (4 words)", early, " ms", 1000))
    print(summary("early fragment off (50)", late, " ms", 1000))
    ratio50 = percentile(late, 50) / percentile(early, 50)
    ratio95 = percentile(late, 95) / percentile(early, 95)
    print(f"  off / on ratio               p50 {ratio50:8.2f}x    p95 {ratio95:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=8, help="replies per mode")
    parser.add_argument("--rate", type=float, default=30.0, help="LLM tokens per second")
    args = parser.parse_args()

    settings = TtsSettings()
    backends: dict[str, Callable[[TtsSettings], SpeechSynthesizer]] = {"piper": PiperSynthesizer}
    print(f"Real-time factor (synthesis time / audio duration), {len(SENTENCES)} sentences")
    synthesizers: dict[str, SpeechSynthesizer] = {}
    for name, make in backends.items():
        synthesizers[name] = make(settings)
        print(summary(name, real_time_factors(synthesizers[name])))
    asyncio.run(run_first_audio(synthesizers[settings.backend], args.replies, args.rate))


if __name__ == "__main__":
    main()
