"""What the load benchmark (benchmarks/load.py) watches while a case runs.

- `Processes`: CPU seconds and peak RSS of each process (the stage replicas, Redis, an LLM
  server), read from /proc (utime + stime; VmRSS sampled, its largest value kept), so no
  extra package is needed. A process that restarts during a case counts with both pids.
- `Backlog`: each stage's consumer-group lag (entries not yet delivered to the group) and
  pending entries (delivered, not yet acknowledged) on the streams of its ordered inputs,
  summed over partitions (XINFO GROUPS). A stage's reader pulls entries into per-partition
  queues at once, so work waiting in a stage shows as pending more than as lag.
- `BusWatch`: tts.chunk and asr.final as they are added, per turn: the first chunk with
  audio, the final chunk (a reply ends with one even when it has nothing to say), and for
  a spoken input the turn asr opened and its end of speech.
- `generations`: after a case, policy.token entries of its turns: when each reply's first
  and last token went out, its status; `most_at_once` counts how many replies were being
  written at the same moment (how many LLM requests really ran in parallel, as the bus saw
  them).
"""

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts import AsrFinal, PolicyToken, TtsChunk
from contracts.topics import ASR_FINAL, POLICY_TOKEN, TTS_CHUNK, Topic
from services.bus.partitions import streams_of
from services.bus.wire import MalformedMessage, StreamEntry, decode_entry, entry_time
from services.registry import stage_class

Rows = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- processes ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, in seconds; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: count fields after its closing ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass
class ProcessUse:
    """One named process over a case: CPU seconds used, largest RSS seen (MB)."""

    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0


@dataclass
class _Tracked:
    first: dict[int, float] = field(default_factory=dict)  # pid -> CPU s when first seen
    last: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0


class Processes:
    """Named processes, each found by a function (a stage's pid changes when it restarts)."""

    def __init__(self, pids: Mapping[str, Callable[[], int | None]]) -> None:
        self.pids = dict(pids)
        self._tracked: dict[str, _Tracked] = {}

    def start(self) -> None:
        self._tracked = {name: _Tracked() for name in self.pids}
        self.sample(starting=True)

    def sample(self, starting: bool = False) -> None:
        for name, find in self.pids.items():
            pid = find()
            if pid is None:
                continue
            cpu, rss = cpu_seconds(pid), rss_bytes(pid)
            if cpu is None or rss is None:
                continue
            tracked = self._tracked[name]
            # A pid first seen after the start (a restart) did all its work in the case.
            tracked.first.setdefault(pid, cpu if starting else 0.0)
            tracked.last[pid] = cpu
            tracked.peak_rss = max(tracked.peak_rss, rss)

    def finish(self) -> dict[str, ProcessUse]:
        self.sample()
        return {
            name: ProcessUse(
                cpu_s=round(sum(t.last[pid] - t.first[pid] for pid in t.last), 2),
                peak_rss_mb=round(t.peak_rss / 2**20, 1),
            )
            for name, t in self._tracked.items()
        }


# --- stream lag ---------------------------------------------------------------------------


def input_streams(stages: Iterable[str], partitions: int) -> dict[str, list[str]]:
    """stage -> the streams of the ordered topics it reads in its consumer group."""
    return {
        stage: [
            stream
            for consumer in stage_class(stage).consumers()
            if consumer.topic.ordered
            for stream in streams_of(consumer.topic, partitions)
        ]
        for stage in stages
    }


@dataclass
class Waiting:
    """A stage's backlog at one moment, summed over its input streams."""

    lag: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        return self.lag + self.pending


class Backlog:
    def __init__(self, client: Redis, streams: Mapping[str, list[str]]) -> None:
        self.client = client
        self.streams = dict(streams)
        self.most: dict[str, Waiting] = {}

    async def now(self) -> dict[str, Waiting]:
        found = {stage: Waiting() for stage in self.streams}
        for stage, streams in self.streams.items():
            for stream in streams:
                try:
                    groups = await self.client.xinfo_groups(stream)
                except ResponseError:
                    continue  # no such stream yet: nothing waits there
                for group in groups:
                    name = group["name"]
                    if (name.decode() if isinstance(name, bytes) else str(name)) == stage:
                        found[stage].lag += int(group.get("lag") or 0)
                        found[stage].pending += int(group.get("pending") or 0)
        return found

    def reset(self) -> None:
        self.most = {stage: Waiting() for stage in self.streams}

    async def sample(self) -> None:
        for stage, waiting in (await self.now()).items():
            most = self.most.setdefault(stage, Waiting())
            most.lag = max(most.lag, waiting.lag)
            most.pending = max(most.pending, waiting.pending)

    async def settle(self, timeout_s: float, quiet_s: float = 0.6) -> bool:
        """Until nothing waits in any stage for quiet_s; False if that never came."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        quiet_since: float | None = None
        while (now := asyncio.get_running_loop().time()) < deadline:
            if all(w.total == 0 for w in (await self.now()).values()):
                quiet_since = now if quiet_since is None else quiet_since
                if now - quiet_since >= quiet_s:
                    return True
            else:
                quiet_since = None
            await asyncio.sleep(0.2)
        return False


class Slots:
    """llama-server's GET /slots: the most slots seen processing at once."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.most = 0

    async def sample(self, http: httpx.AsyncClient) -> None:
        if self.url is None:
            return
        with contextlib.suppress(httpx.HTTPError, ValueError):
            slots = (await http.get(self.url, timeout=2)).json()
            if isinstance(slots, list):
                self.most = max(self.most, sum(bool(s.get("is_processing")) for s in slots))


# --- replies on the bus -------------------------------------------------------------------


@dataclass
class Reply:
    """A turn's speech as tts published it (Unix seconds, from the entries' ids)."""

    first_audio_at: float | None = None
    final_at: float | None = None
    chunks: int = 0
    text: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Heard:
    """An utterance asr finished: the turn it opened."""

    turn_id: str
    speech_end_at: float | None
    text: str


class BusWatch:
    """Reads tts.chunk and asr.final from the streams' ends as entries are added."""

    def __init__(self, client: Redis, partitions: int, max_bytes: int) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self.topics: dict[str, Topic[Any]] = {
            s: TTS_CHUNK for s in streams_of(TTS_CHUNK, partitions)
        }
        self.topics |= {s: ASR_FINAL for s in streams_of(ASR_FINAL, partitions)}
        self.replies: dict[str, Reply] = {}
        self.heard: dict[str, list[Heard]] = {}
        self._heard_changed = asyncio.Condition()
        self._positions: dict[str, bytes | str] = {}

    async def start(self) -> None:
        for stream in self.topics:
            last = cast(list[tuple[bytes, Any]], await self.client.xrevrange(stream, count=1))
            self._positions[stream] = last[0][0] if last else "0-0"

    def reply(self, turn: str) -> Reply:
        return self.replies.setdefault(turn, Reply())

    async def run(self) -> None:
        while True:
            rows = await self.client.xread(cast(Any, self._positions), block=200, count=200)
            for raw_stream, entries in cast(Rows, rows or []):
                stream = raw_stream.decode()
                for entry_id, fields in entries:
                    self._positions[stream] = entry_id
                    entry = StreamEntry(stream, entry_id, fields)
                    try:
                        decoded = decode_entry(entry, self.topics[stream], self.max_bytes)
                    except MalformedMessage:  # the stages dead-letter it: it is no reply
                        continue
                    message = decoded.envelope
                    if isinstance(message, TtsChunk):
                        self._chunk(message, entry_time(entry_id))
                    elif isinstance(message, AsrFinal):
                        await self._final(message)

    def _chunk(self, chunk: TtsChunk, at: float) -> None:
        reply = self.reply(chunk.turn_id or "")
        reply.chunks += 1
        reply.text = f"{reply.text} {chunk.text}".strip() if chunk.text else reply.text
        if chunk.pcm and reply.first_audio_at is None:
            reply.first_audio_at = at
        if chunk.final:
            reply.final_at = at
            reply.done.set()

    async def _final(self, final: AsrFinal) -> None:
        async with self._heard_changed:
            heard = Heard(final.turn_id or "", final.speech_end_at, final.text)
            self.heard.setdefault(final.session_id, []).append(heard)
            self._heard_changed.notify_all()

    async def first_heard(self, session: str) -> Heard:
        """The first utterance asr finished in the session (waits for it)."""
        async with self._heard_changed:
            await self._heard_changed.wait_for(lambda: bool(self.heard.get(session)))
            return self.heard[session][0]


@dataclass(frozen=True)
class Generation:
    """A reply as policy wrote it: its first and final token entries (Unix seconds)."""

    started_at: float
    ended_at: float | None
    status: str | None


async def generations(
    client: Redis, partitions: int, max_bytes: int, turns: set[str], since: float
) -> dict[str, Generation]:
    """policy.token entries of these turns added since `since` (Unix seconds)."""
    first: dict[str, float] = {}
    ended: dict[str, tuple[float, str | None]] = {}
    for stream in streams_of(POLICY_TOKEN, partitions):
        rows = await client.xrange(stream, min=f"{int(since * 1000)}-0")
        for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], rows):
            entry = StreamEntry(stream, entry_id, fields)
            token = decode_entry(entry, POLICY_TOKEN, max_bytes).envelope
            if not isinstance(token, PolicyToken) or token.turn_id not in turns:
                continue
            at = entry_time(entry_id)
            first.setdefault(token.turn_id, at)
            if token.final:
                ended[token.turn_id] = (at, token.status)
    return {turn: Generation(at, *ended.get(turn, (None, None))) for turn, at in first.items()}


def most_at_once(spans: Iterable[tuple[float, float]]) -> int:
    """The largest number of [start, end] spans that overlap at one moment."""
    listed = list(spans)
    edges = sorted(
        [(start, 1) for start, _ in listed] + [(end, -1) for _, end in listed],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most
