"""How closely VTube Studio's mouth follows the reply's audio, and how fast a pause shuts it.

    python -m benchmarks.vts_mouth [--quick] [--replies N] [--json]

VTube Studio cannot run here: the vts stage talks to the protocol-level stand-in of its
API (tests/standins/vts.py), which timestamps every InjectParameterDataRequest as it
arrives. The stage runs in this process on Redis (REDIS_URL, else an embedded one), and
this process plays each reply on the bus as avatar and playback would: the mouth tracks
(avatar.expr, 30 fps) first, as tts runs ahead, then playback.progress "playing" at each
chunk's start, paced in real time, then "finished". Every frame of a track has its own
value, so each injected value says which frame it is.

- mouth timing error: an injected frame's arrival at VTube Studio minus its due time (the
  "playing" report of its chunk plus the frame's place in the chunk). Its floor is the
  stage's 60 Hz tick (a frame waits up to 16.7 ms for it) plus the bus hop of the report.
- baseline, in the same run: how late an asyncio timer in this process wakes at 60 Hz (the
  floor of any injector here), and the error of an injector that plays each track from the
  moment it arrives, not following playback (its error is how far tts ran ahead: AHEAD_S).
- pause -> mouth at zero: from publishing a Pause on control, mid-reply, to VTube Studio
  receiving MouthOpen 0.

Prints a table; asserts nothing.
"""

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.figures import nan_to_none
from contracts import AvatarExpr, Control, Pause, PlaybackProgress
from contracts.topics import AVATAR_EXPR, CONTROL, PLAYBACK_PROGRESS
from services.bus import Bus, BusSettings, Producer, StageRuntime, load_bus_settings
from services.bus.redis_server import EmbeddedRedis
from services.vts.mapping import VtsMapping
from services.vts.settings import VtsSettings
from services.vts.stage import VtsStage
from tests.standins.vts import VtsStandIn

FPS = 30
CHUNK_S = 1.5
CHUNKS = 2
AHEAD_S = 0.4  # how far the mouth tracks come before their audio plays (tts runs ahead)
SESSION = "local"


@dataclass(frozen=True)
class Spread:
    n: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        """p50/p95/max of the values (NaN when there are none)."""
        if not values:
            return cls(0, float("nan"), float("nan"), float("nan"))
        data = np.asarray(values)
        return cls(len(values), float(np.percentile(data, 50)), float(np.percentile(data, 95)),
                   float(data.max()))  # fmt: skip


@dataclass(frozen=True)
class Result:
    error_ms: Spread  # the vts stage
    frames_missed: int  # frames of the tracks never injected
    tick_floor_ms: Spread  # baseline: a 60 Hz timer's lateness here
    pause_ms: Spread


def track_values(reply: int) -> list[float]:
    """A distinct value per frame of the reply (so an injection names its frame)."""
    frames = int(CHUNK_S * FPS) * CHUNKS  # 90: 0.050 .. 0.940 (values go out to 3 places)
    return [round(0.05 + 0.01 * k, 3) for k in range(frames)]


@asynccontextmanager
async def vts_running(bus: BusSettings, standin: VtsStandIn, scratch: Path) -> AsyncIterator[None]:
    settings = VtsSettings(url=standin.url, token_file=scratch / "vts-token")

    async def build(runtime_bus: Bus) -> VtsStage:
        stage = VtsStage(settings, runtime_bus, VtsMapping())
        await stage.connect()
        return stage

    async with StageRuntime(VtsStage, bus, build=build):
        yield


async def play_reply(out: Producer, reply: int, pause_at: float | None) -> tuple[float, float]:
    """One reply on the bus; returns (audio start, pause time or nan), monotonic s."""
    turn, values, per_chunk = f"bench-{reply}", track_values(reply), int(CHUNK_S * FPS)
    for index in range(CHUNKS):
        await out.publish(AvatarExpr(
            session_id=SESSION, turn_id=turn, seq=2 * index, expression="neutral", fps=FPS,
            mouth_open=values[index * per_chunk:(index + 1) * per_chunk],
            offset_s=index * CHUNK_S, state="speaking",
        ))  # fmt: skip
    await asyncio.sleep(AHEAD_S)
    start, paused = time.monotonic(), float("nan")
    for index in range(CHUNKS):
        due = start + index * CHUNK_S
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        await out.publish(PlaybackProgress(
            session_id=SESSION, turn_id=turn, seq=index, chunk_index=index,
            played_s=index * CHUNK_S, state="playing", remaining_s=CHUNK_S,
        ))  # fmt: skip
        if pause_at is not None and index == 0:
            await asyncio.sleep(max(0.0, start + pause_at - time.monotonic()))
            paused = time.monotonic()
            await out.publish(Control(session_id=SESSION, message_id=f"{turn}.pause:0", seq=0,
                                      command=Pause(target_turn_id=turn)))  # fmt: skip
            await out.publish(PlaybackProgress(
                session_id=SESSION, turn_id=turn, seq=CHUNKS + 1, chunk_index=0,
                played_s=pause_at, state="flushed",
            ))  # fmt: skip
            return start, paused
    await asyncio.sleep(max(0.0, start + CHUNKS * CHUNK_S - time.monotonic()))
    await out.publish(PlaybackProgress(
        session_id=SESSION, turn_id=turn, seq=CHUNKS, chunk_index=CHUNKS - 1,
        played_s=CHUNKS * CHUNK_S, state="finished",
    ))  # fmt: skip
    return start, paused


async def tick_floor(seconds: float) -> list[float]:
    """How late a 60 Hz asyncio timer wakes in this process (ms)."""
    late, period = [], 1 / 60
    tick = time.monotonic()
    end = tick + seconds
    while tick < end:
        tick += period
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
        late.append((time.monotonic() - tick) * 1000)
    return late


async def run(replies: int, pauses: int) -> Result:
    redis_url = os.environ.get("REDIS_URL")
    errors: list[float] = []
    pause_delays: list[float] = []
    missed = 0
    with (
        EmbeddedRedis() if not redis_url else nullcontext() as server,
        tempfile.TemporaryDirectory() as scratch,
    ):
        bus = load_bus_settings(redis_url=server.url if server else redis_url, partitions=2)
        async with (
            VtsStandIn() as standin,
            vts_running(bus, standin, Path(scratch)),
            Producer(bus, "vts-bench", [AVATAR_EXPR, PLAYBACK_PROGRESS, CONTROL]) as out,
        ):
            for reply in range(replies):
                seen = len(standin.injections)
                start, _ = await play_reply(out, reply, None)
                await asyncio.sleep(0.3)
                frame_of = {v: k for k, v in enumerate(track_values(reply))}
                got: dict[int, float] = {}
                for at, values in standin.injections[seen:]:
                    k = frame_of.get(values.get("MouthOpen", -1.0))
                    if k is not None and k not in got:
                        got[k] = at
                for k, at in got.items():
                    errors.append((at - (start + k / FPS)) * 1000)
                missed += len(frame_of) - len(got)
            for trial in range(pauses):
                seen = len(standin.injections)
                pause_at = random.uniform(0.4, CHUNK_S - 0.2)
                _, paused = await play_reply(out, replies + trial, pause_at)
                await asyncio.sleep(0.5)
                zero = [at for at, values in standin.injections[seen:]
                        if at >= paused and values.get("MouthOpen") == 0.0]  # fmt: skip
                if zero:
                    pause_delays.append((zero[0] - paused) * 1000)
            floor = await tick_floor(2.0)
    return Result(Spread.of(errors), missed, Spread.of(floor), Spread.of(pause_delays))


def render(result: Result, console: Console) -> None:
    table = Table(title="VTube Studio mouth (vts stage -> stand-in), ms")
    for column in ("measure", "n", "p50", "p95", "max"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    rows = [("mouth timing error (vts stage)", result.error_ms),
            ("baseline: a 60 Hz timer's lateness", result.tick_floor_ms),
            ("pause -> mouth at zero", result.pause_ms)]  # fmt: skip
    for name, spread in rows:
        table.add_row(name, str(spread.n), f"{spread.p50:.1f}", f"{spread.p95:.1f}",
                      f"{spread.max:.1f}")  # fmt: skip
    console.print(table)
    console.print(
        f"frames never injected: {result.frames_missed}; an injector that plays "
        f"each track on arrival is {AHEAD_S * 1000:.0f} ms early (tts's lead here)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 replies, 3 pauses")
    parser.add_argument("--replies", type=int, default=None, help="replies timed (default 6)")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    args = parser.parse_args(argv)
    replies = args.replies or (2 if args.quick else 6)
    result = asyncio.run(run(replies, pauses=3 if args.quick else 10))
    if args.json:
        print(json.dumps(nan_to_none(asdict(result)), indent=2))
    else:
        render(result, Console(width=100))


if __name__ == "__main__":
    main()
