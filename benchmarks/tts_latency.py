"""tts stage latency per backend: real-time factor, and first token -> first tts.chunk.

    python -m benchmarks.tts_latency [--replies N] [--rate TOKENS_PER_S] [--backends piper,kokoro]

1. Real-time factor per backend (piper, kokoro): synthesis time / audio duration over
   sentences of a few lengths, after one warm-up.
2. First audio: the real TtsStage under a StageRuntime in this process (embedded Redis).
   A simulated LLM (a Producer) publishes each reply word by word as policy.token at a
   fixed rate; the stage's consumer takes them off the bus in order. Latency is from
   just before the first token's publish to the return of the first tts.chunk publish of
   that turn (one bus hop, about a millisecond, more than a direct call). Measured with
   the early first fragment on (default) and effectively off, one warm-up reply each.

Every backend is measured in the same run, so the ratios against Piper compare like with
like. Prints a table; asserts nothing.
"""

import argparse
import asyncio
import time
import uuid
from typing import Any, TypeVar, cast

from contracts import Envelope, PolicyToken, TtsChunk
from contracts.limits import AUDIO_SAMPLE_WIDTH
from contracts.topics import POLICY_TOKEN, TTS_CHUNK, Topic
from services.bus import Bus, BusSettings, Producer, StageRuntime, load_bus_settings
from services.bus.redis_server import EmbeddedRedis
from services.bus.stage import Publisher
from services.settings import load_settings
from services.tts.settings import TtsSettings
from services.tts.stage import TtsStage
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

M = TypeVar("M", bound=Envelope)


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


class TimedBus:
    """The runtime's bus as the tts stage sees it, noting when each tts.chunk publish
    returned (perf_counter) per (turn, index), and which turns have spoken their last chunk."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.published: dict[tuple[str | None, int], float] = {}
        self.finished: dict[str | None, asyncio.Event] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    def publisher(self, topic: Topic[M]) -> Publisher[M]:
        inner = self._bus.publisher(topic)
        if topic.name != TTS_CHUNK.name:
            return inner
        bus = self

        class Timed:
            async def publish(self, message: M) -> bytes | None:
                entry_id = await inner.publish(message)
                assert isinstance(message, TtsChunk)
                key = (message.turn_id, message.index)
                bus.published.setdefault(key, time.perf_counter())
                if message.final:
                    bus.turn_done(message.turn_id).set()
                return entry_id

        return Timed()

    def turn_done(self, turn_id: str | None) -> asyncio.Event:
        return self.finished.setdefault(turn_id, asyncio.Event())


async def stream_reply(
    tokens: Producer, timed: TimedBus, reply: str, turn_id: str, rate: float
) -> float:
    """Streams one reply to the stage as policy.token messages, paced at `rate` tokens/s;
    returns when its first token was published, once its last chunk is out."""
    words = reply.split(" ")
    sent = time.perf_counter()
    for index, word in enumerate(words):
        text = word if index == 0 else " " + word
        await tokens.publish(PolicyToken(session_id="bench", turn_id=turn_id, seq=index,
                                         index=index, text=text))  # fmt: skip
        await asyncio.sleep(1 / rate)
    n = len(words)
    final = PolicyToken(session_id="bench", turn_id=turn_id, seq=n, index=n, text="",
                        final=True, reply_text=reply, status="ok")  # fmt: skip
    await tokens.publish(final)
    await asyncio.wait_for(timed.turn_done(turn_id).wait(), 120)
    return sent


async def first_audio(
    bus: BusSettings,
    synthesizer: SpeechSynthesizer,
    fragment_words: int,
    replies: int,
    rate: float,
) -> list[float]:
    """The tts stage under StageRuntime with this synthesizer, fed by a Producer of tokens:
    first token published -> first tts.chunk publish returned, per reply (one warm-up
    reply first, not counted)."""
    settings = TtsSettings(first_fragment_words=fragment_words)
    timed: TimedBus | None = None

    async def build(redis_bus: Bus) -> TtsStage:
        nonlocal timed
        timed = TimedBus(redis_bus)
        return TtsStage(settings, synthesizer, cast(Bus, timed))

    async with (
        StageRuntime(TtsStage, bus, build=build),
        Producer(bus, "bench-policy", [POLICY_TOKEN]) as tokens,
    ):
        assert timed is not None
        latencies: list[float] = []
        for number in range(-1, replies):
            turn_id = f"t-{fragment_words}-{number}-{uuid.uuid4().hex[:8]}"
            reply = REPLIES[number % len(REPLIES)]
            sent = await stream_reply(tokens, timed, reply, turn_id, rate)
            if number >= 0:
                latencies.append(timed.published[(turn_id, 0)] - sent)
        return latencies


Figures = dict[str, list[float]]  # column -> samples


async def measure_first_audio(
    synthesizers: dict[str, SpeechSynthesizer], replies: int, rate: float
) -> dict[str, Figures]:
    with EmbeddedRedis() as server:
        bus = load_bus_settings(redis_url=server.url)
        figures: dict[str, Figures] = {}
        for name, synthesizer in synthesizers.items():
            figures[name] = {
                "first chunk": await first_audio(bus, synthesizer, 4, replies, rate),
                "fragment off": await first_audio(bus, synthesizer, 50, replies, rate),
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
