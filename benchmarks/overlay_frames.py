"""The overlay's frame times in Chromium while a reply plays, and how late the mouth is.

    python -m benchmarks.overlay_frames [--quick] [--seconds S] [--size 1920x1080]

A gateway runs in this process (on REDIS_URL, else an embedded Redis) and headless
Chromium (the system's, /usr/bin/chromium or MARIONETTE_CHROMIUM, through Playwright)
opens /overlay at the given size. This process plays a scripted reply on the bus as the
stages would: per 2 s chunk a tts.chunk (its text; silent PCM of the right length), an
avatar.expr with a 30 fps mouth track, and playback.progress "playing" at the chunk's
start (paced in real time), then "finished".

Three variants, one after the other in the same run, with the same reply:

- empty loop: a blank page running only a requestAnimationFrame loop: the frame rate the
  browser gives anything on this machine (the baseline);
- drawing off: the overlay with draw=0: it follows the events and works out every frame
  but writes nothing to the page;
- overlay: the page as OBS shows it.

Per variant: frames, frame interval p50/p95 (ms between requestAnimationFrame timestamps:
16.7 is 60 fps), work p50/p95 (ms inside the page's frame callback), and for the overlay
variants the mouth lag p50/p95: from a mouth-track frame's due time (in the turn's audio
clock, kept from playback.progress) to the animation frame that first shows it. A track
frame lasts 33 ms and animation frames come every 16.7 ms, so a lag under one animation
frame is as good as it gets. Prints a table; asserts nothing.
"""

import argparse
import asyncio
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from contracts import AvatarExpr, PlaybackProgress, TtsChunk
from contracts.topics import AVATAR_EXPR, PLAYBACK_PROGRESS, TTS_CHUNK
from services.bus import BusSettings, Producer, StageRuntime, load_bus_settings
from services.bus.redis_server import EmbeddedRedis
from services.gateway.stage import GatewayStage

if TYPE_CHECKING:
    from playwright.async_api import Browser

CHROMIUM = Path(os.environ.get("MARIONETTE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--autoplay-policy=no-user-gesture-required", "--disable-gpu",
                 "--disable-dev-shm-usage"]  # fmt: skip
CHUNK_S = 2.0
FPS = 30
RATE = 16_000
SENTENCES = (
    "Hello chat, welcome back to the stream!",
    "Today we are building a tiny robot out of cardboard.",
    "It will probably fall over, but that is half the fun.",
    "Let me know in the chat what we should name it.",
)
EMPTY_LOOP = """() => {
  window.emptyStats = { intervals: [], work: [], last: null, frames: 0 };
  const loop = (time) => {
    const s = window.emptyStats;
    const start = performance.now();
    s.frames += 1;
    if (s.last !== null) s.intervals.push(time - s.last);
    s.last = time;
    s.work.push(performance.now() - start);
    requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
}"""


@dataclass(frozen=True)
class Spread:
    """p50 and p95 of a sample (ms), and its size."""

    n: int
    p50: float
    p95: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        ordered = sorted(values)
        if not ordered:
            return cls(0, math.nan, math.nan)

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return cls(len(ordered), rank(0.5), rank(0.95))


@dataclass(frozen=True)
class Variant:
    name: str
    seconds: float
    frames: int
    interval: Spread
    work: Spread
    lag: Spread | None  # None: the variant draws no mouth

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else math.nan


def mouth_track(index: int, frames: int) -> list[float]:
    """A speech-like 30 fps mouth track: syllables of varying height, short gaps."""
    values = []
    for k in range(frames):
        syllable = abs(math.sin((k + index * 7) * 0.55))
        values.append(round(0.0 if k % 11 in (0, 1) else 0.2 + 0.75 * syllable, 3))
    return values


async def play_reply(producer: Producer, session: str, seconds: float) -> None:
    """The reply, as tts, avatar and playback would put it on the bus, in real time."""
    turn = f"bench-{uuid.uuid4().hex[:8]}"
    chunks = max(1, round(seconds / CHUNK_S))
    frames = round(CHUNK_S * FPS)
    start = time.monotonic()
    for index in range(chunks):
        final = index == chunks - 1
        offset = index * CHUNK_S
        await producer.publish(TtsChunk(
            session_id=session, turn_id=turn, seq=index, index=index, final=final,
            text=SENTENCES[index % len(SENTENCES)], sample_rate=RATE,
            pcm=bytes(int(CHUNK_S * RATE) * 2),
        ))  # fmt: skip
        await producer.publish(AvatarExpr(
            session_id=session, turn_id=turn, seq=index * 2, expression="happy", fps=FPS,
            mouth_open=mouth_track(index, frames), offset_s=offset, state="speaking",
        ))  # fmt: skip
        await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
        await producer.publish(PlaybackProgress(
            session_id=session, turn_id=turn, seq=index, chunk_index=index, played_s=offset,
            state="playing", remaining_s=CHUNK_S,
        ))  # fmt: skip
    await asyncio.sleep(max(0.0, start + chunks * CHUNK_S - time.monotonic()))
    await producer.publish(PlaybackProgress(
        session_id=session, turn_id=turn, seq=chunks, chunk_index=chunks - 1,
        played_s=chunks * CHUNK_S, state="finished",
    ))  # fmt: skip


async def run_variant(
    browser: "Browser", url: str, producer: Producer, name: str, seconds: float,
    size: tuple[int, int],
) -> Variant:  # fmt: skip
    context = await browser.new_context(viewport={"width": size[0], "height": size[1]})
    try:
        page = await context.new_page()
        session = f"bench-{uuid.uuid4().hex[:8]}"
        if name == "empty loop":
            await page.goto("about:blank")
            await page.evaluate(EMPTY_LOOP)
            await page.wait_for_timeout(500)  # past the first frames
            await page.evaluate("() => { emptyStats.intervals = []; emptyStats.work = []; "
                                "emptyStats.frames = 0; }")  # fmt: skip
            started = time.monotonic()
            await play_reply(producer, session, seconds)
            took = time.monotonic() - started
            raw = await page.evaluate("() => emptyStats")
            return Variant(name, took, raw["frames"], Spread.of(raw["intervals"]),
                           Spread.of(raw["work"]), None)  # fmt: skip
        draw = "0" if name == "drawing off" else "1"
        await page.goto(f"{url}/overlay?session={session}&draw={draw}")
        await page.wait_for_function("document.body.dataset.link === 'open'", timeout=15_000)
        await page.wait_for_timeout(500)
        await page.evaluate("() => overlayStats.reset()")
        started = time.monotonic()
        await play_reply(producer, session, seconds)
        took = time.monotonic() - started
        raw = await page.evaluate(
            "() => ({frames: overlayStats.frames, intervals: overlayStats.intervals, "
            "work: overlayStats.work, lag: overlayStats.trackDelays})"
        )
        return Variant(name, took, raw["frames"], Spread.of(raw["intervals"]),
                       Spread.of(raw["work"]), Spread.of(raw["lag"]))  # fmt: skip
    finally:
        await context.close()


async def measure(
    browser: "Browser", url: str, bus: BusSettings, seconds: float, size: tuple[int, int]
) -> list[Variant]:
    """The three variants, one after the other, against the gateway at `url`."""
    results = []
    async with Producer(bus, "bench-overlay", [TTS_CHUNK, AVATAR_EXPR, PLAYBACK_PROGRESS]) as out:
        for name in ("empty loop", "drawing off", "overlay"):
            results.append(await run_variant(browser, url, out, name, seconds, size))
    return results


def render(results: Sequence[Variant], size: tuple[int, int], console: Console) -> None:
    table = Table(title=f"/overlay at {size[0]}x{size[1]} in Chromium while a reply plays (ms)")
    table.add_column("variant", no_wrap=True)
    for column in ("frames", "fps", "frame p50", "frame p95", "work p50", "work p95",
                   "mouth lag p50", "mouth lag p95"):  # fmt: skip
        table.add_column(column, justify="right")

    def ms(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.1f}"

    for r in results:
        lag = r.lag or Spread(0, math.nan, math.nan)
        table.add_row(r.name, str(r.frames), f"{r.fps:.1f}", ms(r.interval.p50),
                      ms(r.interval.p95), ms(r.work.p50), ms(r.work.p95), ms(lag.p50),
                      ms(lag.p95))  # fmt: skip
    console.print(table)
    overlay, floor = results[-1], results[0]
    lag_p95 = overlay.lag.p95 if overlay.lag else math.nan
    console.print(
        f"Target 60 fps (a frame every 16.7 ms). The overlay ran at {overlay.fps:.1f} fps, its "
        f"p95 frame {overlay.interval.p95 - floor.interval.p95:+.1f} ms against the empty "
        f"loop's; drawing took {overlay.work.p50:.1f} ms (p50) of a frame (the browser's clock "
        f"counts in 0.1 ms). Mouth lag p95 {ms(lag_p95)} ms: under one frame is the floor, as "
        "a 30 fps track frame shows on the first 60 fps frame after it is due."
    )


@asynccontextmanager
async def gateway_on(bus: BusSettings) -> AsyncIterator[str]:
    saved = os.environ.get("MARIONETTE_GATEWAY_PORT")
    os.environ["MARIONETTE_GATEWAY_PORT"] = "0"
    try:
        async with StageRuntime(GatewayStage, bus) as runtime:
            await runtime.stage.listening.wait()
            yield runtime.stage.url
    finally:
        if saved is None:
            os.environ.pop("MARIONETTE_GATEWAY_PORT", None)
        else:
            os.environ["MARIONETTE_GATEWAY_PORT"] = saved


async def run(seconds: float, size: tuple[int, int]) -> list[Variant]:
    from playwright.async_api import async_playwright

    redis_url = os.environ.get("REDIS_URL")
    with EmbeddedRedis() if not redis_url else nullcontext() as server:
        bus = load_bus_settings(redis_url=server.url if server else redis_url, partitions=2)
        async with gateway_on(bus) as url, async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                       args=CHROMIUM_ARGS)  # fmt: skip
            try:
                return await measure(browser, url, bus, seconds, size)
            finally:
                await browser.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 4 s reply per variant")
    parser.add_argument("--seconds", type=float, default=None, help="reply length (default 12)")
    parser.add_argument("--size", default="1920x1080", help="the page's size, WxH")
    args = parser.parse_args(argv)
    seconds = args.seconds or (4.0 if args.quick else 12.0)
    width, height = (int(v) for v in args.size.lower().split("x"))
    results = asyncio.run(run(seconds, (width, height)))
    console = Console()
    render(results, (width, height), console if console.is_terminal else Console(width=120))


def summary(results: Sequence[Variant]) -> dict[str, dict[str, Any]]:
    """The figures as plain numbers, per variant (for a test or a JSON dump)."""
    return {
        r.name: {
            "frames": r.frames,
            "fps": r.fps,
            "interval_p50": r.interval.p50,
            "interval_p95": r.interval.p95,
            "work_p50": r.work.p50,
            "work_p95": r.work.p95,
            "lag_p50": r.lag.p50 if r.lag else None,
            "lag_p95": r.lag.p95 if r.lag else None,
        }
        for r in results
    }


if __name__ == "__main__":
    main()
