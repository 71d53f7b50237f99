"""A chaos run: start a whole Marionette, talk to it, kill its stages and restart its Redis.

Turns go out at a steady pace (chat lines from a few viewers, and spoken questions made
with Piper), while stage processes are SIGKILLed at random intervals and Redis is killed
and restarted on its port and append-only file. A watcher reads the lease keys every
25 ms, to tell when the partitions a killed replica held are served again. When the last
turn is sent, the kills stop, the run waits for the replies to settle, and the streams
are judged (verdict.py).
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
from redis.asyncio import Redis

from contracts import AudioFrame, ChatMessage
from contracts.envelope import message_id
from contracts.topics import ALL_TOPICS, AUDIO_FRAME, CHAT_MESSAGE, Topic
from services.bench.utterances import FRAME_BYTES, QUESTIONS, Utterance, synthesize
from services.bus import BusSettings, Producer
from services.bus.dead_letters import dead_letter_topics, list_dead_letters
from services.bus.ownership import lease_key
from services.bus.partitions import streams_of
from services.bus.redis_server import EmbeddedRedis
from services.bus.wire import MalformedMessage, StreamEntry, decode_entry, entry_time
from services.chaos.verdict import ChaosReport, Published, Recovery, SentTurn, judge
from services.supervisor import Child, Supervisor
from services.system import local_system

log = logging.getLogger("marionette.chaos")

DEFAULT_STAGES = {"asr": 1, "policy": 1, "tts": 1, "avatar": 1, "playback": 1}
CHAT_LINES = (
    "hi! what are we doing today?", "tell me a joke about robots", "what's your favourite game?",
    "say hello to my friend Sam", "do you like pizza?", "what did you do yesterday?",
    "how is the weather where you are?", "sing me a tiny song",
)  # fmt: skip
STAGE_ENV = {
    # Short replies and quiet stages: the run is about delivery, not eloquence.
    "MARIONETTE_POLICY_MAX_TOKENS": "40",
    "MARIONETTE_PLAYBACK_OUTPUT": "wav",
    "MARIONETTE_TELEMETRY_TRACES": "off",
}


@dataclass
class ChaosPlan:
    turns: int = 40
    every_s: float = 3.0
    spoken_share: float = 0.25
    kill_every_s: tuple[float, float] = (2.0, 6.0)
    kills: int | None = None  # stop after this many kills (None: while turns are sent)
    redis_restarts: int = 0
    redis_down_s: float = 1.0
    stages: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_STAGES))
    victims: list[str] | None = None  # stages that may be killed (default: all started)
    round_robin: bool = False  # kill the victims in turn instead of at random
    spares: bool = True  # as `marionette up`: a prepared spare beside each replica
    sessions: int = 4
    settle_s: float = 120.0
    seed: int | None = None


@dataclass
class _Kill:
    child: str
    replica: str
    stage: str
    at: float
    tokens: dict[int, bytes]  # partition -> the lease token it held
    served_again: float | None = None


@dataclass
class _Run:
    plan: ChaosPlan
    bus: BusSettings
    supervisor: Supervisor
    server: EmbeddedRedis
    started: float = field(default_factory=time.time)
    sent: list[SentTurn] = field(default_factory=list)
    kills: list[_Kill] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)
    lease_changes: list[int] = field(default_factory=list)  # per Redis restart, not from kills
    sending: bool = True
    rng: random.Random = field(default_factory=random.Random)


def run_chaos(
    plan: ChaosPlan, workdir: Path, progress: Callable[[str], None] = lambda line: None
) -> ChaosReport:
    """Run the plan in `workdir` (Redis data, playback WAVs, the stages' log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(plan.seed)
    spoken = synthesize(len(QUESTIONS)) if plan.spoken_share > 0 and "asr" in plan.stages else []
    env_defaults = {**STAGE_ENV, "MARIONETTE_PLAYBACK_WAV_DIR": str(workdir / "playback")}
    with (workdir / "stages.log").open("w") as stage_log:

        def write(name: str, line: str) -> None:
            stage_log.write(f"{time.time():.3f} {name:>10} | {line}\n")
            stage_log.flush()
            if "[supervisor]" in line:
                progress(f"{name}: {line.removeprefix('[supervisor] ')}")

        server = EmbeddedRedis(data_dir=workdir / "redis", persistence=True)
        server.start()
        bus = BusSettings(redis_url=server.url)
        try:
            system = local_system(
                bus, plan.stages, write, redis=server, env_defaults=env_defaults,
                spares=plan.spares,
            )  # fmt: skip
            with system as (live, supervisor):
                run = _Run(plan, live, supervisor, server, rng=rng)
                _wait_ready(supervisor, progress)
                progress("every stage is ready; the conversation starts")
                run.started = time.time()
                asyncio.run(_drive(run, spoken, progress))
                progress("collecting what the streams hold")
                return asyncio.run(_report(run))
        finally:
            server.close()


def _wait_ready(supervisor: Supervisor, progress: Callable[[str], None]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        waiting = [c.name for c in supervisor.children.values() if c.ready_at is None]
        if not waiting:
            return
        time.sleep(0.2)
    raise RuntimeError(f"stages never became ready: {', '.join(waiting)}")


async def _drive(run: _Run, spoken: list[Utterance], progress: Callable[[str], None]) -> None:
    watcher = asyncio.create_task(_watch_leases(run))
    killer = asyncio.create_task(_kill_at_random(run, progress))
    restarter = asyncio.create_task(_restart_redis(run, progress))
    try:
        await _send_turns(run, spoken, progress)
        run.sending = False
        await asyncio.gather(killer, restarter)
        await _settle(run, progress)
    finally:
        for task in (watcher, killer, restarter):
            task.cancel()
        await asyncio.gather(watcher, killer, restarter, return_exceptions=True)


async def _send_turns(run: _Run, spoken: list[Utterance], progress: Callable[[str], None]) -> None:
    plan, rng = run.plan, run.rng
    async with Producer(run.bus, "chaos", [CHAT_MESSAGE, AUDIO_FRAME]) as out:
        for number in range(plan.turns):
            due = run.started + number * plan.every_s
            await asyncio.sleep(max(0.0, due - time.time()))
            if spoken and rng.random() < plan.spoken_share:
                utterance = spoken[number % len(spoken)]
                await _speak(out, run, f"chaos{number}", utterance)
            else:
                session = f"viewer{rng.randrange(plan.sessions)}"
                text = CHAT_LINES[number % len(CHAT_LINES)]
                run.sent.append(SentTurn("chat", session, f"chaos{number}", text, time.time()))
                await out.publish(
                    ChatMessage(
                        session_id=session, turn_id=f"chaos{number}", seq=0,
                        platform="cli", author=session, text=text,
                    )
                )  # fmt: skip
            progress(f"turn {number + 1}/{plan.turns} sent")


async def _speak(out: Producer, run: _Run, capture_run: str, utterance: Utterance) -> None:
    """A spoken question as a capture run of its own, as fast as Redis takes it, then
    silence and the end of the input. Each in a session of its own: a question spoken while
    the character still answers the last one would be talking over it (barge-in), which
    is not what this run is about."""
    session = f"mic-{capture_run}"
    pcm = utterance.pcm + bytes(FRAME_BYTES * 40)
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    frames[-1] = frames[-1].ljust(FRAME_BYTES, b"\0")
    start = time.time()
    for seq, frame in enumerate(frames):
        await out.publish(
            AudioFrame(
                session_id=session, message_id=message_id(capture_run, seq), seq=seq, pcm=frame,
                captured_at=start + seq * 0.02, end_of_input=seq == len(frames) - 1,
            )
        )  # fmt: skip
    run.sent.append(SentTurn("speech", session, capture_run, utterance.text, time.time()))


def _lease_holders(client: redis.Redis, groups: list[str], partitions: int) -> dict[str, Any]:
    keys = [lease_key(g, p) for g in groups for p in range(partitions)]
    return dict(zip(keys, client.mget(keys), strict=True))


async def _watch_leases(run: _Run) -> None:
    """Tell when the partitions each kill took away are held again (by anyone)."""
    client = redis.Redis.from_url(run.bus.redis_url or "", socket_timeout=0.5)
    groups = sorted(run.plan.stages)
    while True:
        await asyncio.sleep(0.025)
        pending = [k for k in run.kills if k.served_again is None]
        if not pending:
            continue
        try:
            holders = await asyncio.to_thread(_lease_holders, client, groups, run.bus.partitions)
        except redis.RedisError:
            continue  # Redis is being restarted
        now = time.time()
        for kill in pending:
            if kill.tokens:
                keys = {p: lease_key(kill.stage, p) for p in kill.tokens}
                if all(holders[keys[p]] not in (None, kill.tokens[p]) for p in kill.tokens):
                    kill.served_again = now
            else:
                child = run.supervisor.children.get(kill.child)
                if (
                    child is not None
                    and child.ready_at is not None
                    and (time.monotonic() - child.ready_at < now - kill.at)
                ):
                    kill.served_again = now - (time.monotonic() - child.ready_at)


def _owner(token: bytes | None) -> str | None:
    """The replica a lease token names ("<replica>#<epoch>.<nonce>")."""
    return None if token is None else token.decode().partition("#")[0]


def _stage_of(child: str, stages: dict[str, int]) -> str:
    return child if child in stages else child.rsplit("-", 1)[0]


async def _kill_at_random(run: _Run, progress: Callable[[str], None]) -> None:
    plan, rng = run.plan, run.rng
    victims = plan.victims or sorted(plan.stages)
    client = redis.Redis.from_url(run.bus.redis_url or "", socket_timeout=0.5)
    while run.sending and (plan.kills is None or len(run.kills) < plan.kills):
        await asyncio.sleep(rng.uniform(*plan.kill_every_s))
        children = [
            c for c in run.supervisor.children.values()
            if _stage_of(c.name, plan.stages) in victims and _alive(c)
        ]  # fmt: skip
        if not children:
            continue
        if plan.round_robin:
            children.sort(key=lambda c: (sum(k.child == c.name for k in run.kills), c.name))
            child = children[0]
        else:
            child = rng.choice(children)
        stage = _stage_of(child.name, plan.stages)
        replica = child.env.get("MARIONETTE_REPLICA_ID", child.name)
        try:
            holders = await asyncio.to_thread(_lease_holders, client, [stage], run.bus.partitions)
        except redis.RedisError:
            holders = {}
        tokens = {
            partition: value
            for partition in range(run.bus.partitions)
            if (value := holders.get(lease_key(stage, partition))) is not None
            and value.decode().startswith(f"{replica}#")
        }
        assert child.process is not None
        child.process.kill()
        run.kills.append(_Kill(child.name, replica, stage, time.time(), tokens))
        progress(f"killed {child.name} (held {len(tokens)} partitions)")


def _alive(child: Child) -> bool:
    return child.process is not None and child.process.poll() is None


async def _restart_redis(run: _Run, progress: Callable[[str], None]) -> None:
    plan = run.plan
    if not plan.redis_restarts:
        return
    client = redis.Redis.from_url(run.bus.redis_url or "", socket_timeout=0.5)
    window = plan.turns * plan.every_s
    for number in range(plan.redis_restarts):
        due = run.started + window * (number + 0.5) / plan.redis_restarts
        await asyncio.sleep(max(0.0, due - time.time()))
        groups = sorted(plan.stages)
        before = _lease_holders(client, groups, run.bus.partitions)
        snapshot_at = time.time()
        # In this thread: the server dies with the thread that started it (PDEATHSIG), and
        # a worker thread of to_thread() ends when idle.
        run.server.stop(kill=True)
        await asyncio.sleep(plan.redis_down_s)
        run.server.start()
        run.restarts.append(time.time())
        await asyncio.sleep(3 * run.bus.lease_ms / 1000)
        after = await asyncio.to_thread(_lease_holders, client, groups, run.bus.partitions)
        # A stage killed shortly before, or meanwhile, is taking its leases back anyway.
        killed = {k.stage for k in run.kills if k.at >= snapshot_at - 10}
        run.lease_changes.append(sum(
            1 for key, token in before.items()
            if token is not None and _owner(after.get(key)) != _owner(token)
            and key.split(":")[2] not in killed
        ))  # fmt: skip
        progress(f"Redis restart {number + 1}/{plan.redis_restarts} (down {plan.redis_down_s} s)")


async def _settle(run: _Run, progress: Callable[[str], None]) -> None:
    """Wait until every turn is answered and played (or settle_s passes)."""
    deadline = time.time() + run.plan.settle_s
    playback = "playback" in run.plan.stages
    while time.time() < deadline:
        reports = judge(run.sent, await _read_streams(run.bus), playback=playback)
        open_turns = [r for r in reports if r.verdict != "answered once"]
        if not open_turns:
            return
        await asyncio.sleep(1.0)
    progress(f"{len(open_turns)} turns did not settle within {run.plan.settle_s:g} s")


async def _read_streams(bus: BusSettings) -> dict[str, list[Published]]:
    client: Redis = Redis.from_url(bus.redis_url or "")
    try:
        found: dict[str, list[Published]] = {}
        for topic in ALL_TOPICS:
            if topic.name == AUDIO_FRAME.name:
                continue
            found[topic.name] = await _read_topic(client, topic, bus.partitions)
        return found
    finally:
        await client.aclose()


async def _read_topic(client: Redis, topic: Topic[Any], partitions: int) -> list[Published]:
    messages = []
    for stream in streams_of(topic, partitions):
        rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(stream))
        for entry_id, fields in rows:
            try:
                envelope = decode_entry(StreamEntry(stream, entry_id, fields), topic, 1 << 30)
            except MalformedMessage:
                continue
            messages.append(Published(envelope.envelope, entry_time(entry_id)))
    return sorted(messages, key=lambda item: item.added_at)


async def _report(run: _Run) -> ChaosReport:
    streams = await _read_streams(run.bus)
    client: Redis = Redis.from_url(run.bus.redis_url or "")
    try:
        letters = [
            letter.as_json()
            for topic in await dead_letter_topics(client)
            for letter in await list_dead_letters(client, topic, 10_000)
        ]
    finally:
        await client.aclose()
    turns = judge(run.sent, streams, playback="playback" in run.plan.stages)
    reply_of = {
        (sent.session_id, sent.key): report.latency_s.get("reply")
        for report, sent in zip(turns, run.sent, strict=True)
    }
    after_restarts = []
    for at in run.restarts:  # the first turn asked after it: how long until its reply
        later = [t for t in run.sent if t.sent_at > at]
        first = min(later, key=lambda t: t.sent_at) if later else None
        reply = reply_of.get((first.session_id, first.key)) if first else None
        after_restarts.append(float("nan") if reply is None else reply)
    kills = [
        Recovery(
            k.stage, k.child, round(k.at - run.started, 2), len(k.tokens),
            None if k.served_again is None else round(k.served_again - k.at, 3),
        )
        for k in run.kills
    ]  # fmt: skip
    return ChaosReport(
        turns=turns,
        kills=kills,
        redis_restarts=[round(s, 3) for s in after_restarts],
        lease_changes_after_restarts=run.lease_changes,
        dead_letters=letters,
        replicas=dict(run.plan.stages),
        duration_s=time.time() - run.started,
    )
