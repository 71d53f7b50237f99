"""Module toggles and panic on a real Redis: a stage switched off says nothing, remembers
it past the control history, and panic stops the turn in progress."""

import json
from collections.abc import AsyncIterator
from itertools import count

import pytest
from redis.asyncio import Redis

from contracts import ChatMessage, Control, ModuleToggle, Panic, PolicyToken, TtsChunk
from contracts.control import Command
from contracts.topics import CHAT_MESSAGE, CONTROL, POLICY_TOKEN, TTS_CHUNK
from services.bus import Bus, BusSettings, Producer, Stage, StageRuntime, consumes
from services.bus.switches import SWITCHES_KEY, read_switches, store_switch
from services.tts.settings import TtsSettings
from services.tts.stage import TtsStage
from tests.helpers import read_topic, viewer_chat, wait_until
from tests.unit.test_tts_stage import REPLY, FakeSynthesizer, reply

pytestmark = pytest.mark.integration


class SpyTts(TtsStage):
    """tts with a fake voice, noting the turns it was told to drop."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(TtsSettings(), FakeSynthesizer(), bus)
        self.interrupted: list[tuple[str, str]] = []

    async def on_interrupt(self, session_id: str, turn_id: str) -> None:
        self.interrupted.append((session_id, turn_id))
        await super().on_interrupt(session_id, turn_id)


async def build_tts(bus: Bus) -> SpyTts:
    return SpyTts(bus)


def tts_runtime(settings: BusSettings) -> StageRuntime[SpyTts]:
    return StageRuntime(SpyTts, settings, build=build_tts)


@pytest.fixture
async def producer(bus_settings: BusSettings) -> AsyncIterator[Producer]:
    async with Producer(bus_settings, "panel", [CONTROL, POLICY_TOKEN]) as out:
        yield out


_sent = count()


async def send(producer: Producer, command: Command) -> None:
    """As the panel would; each message an id of its own (control is deduplicated by id)."""
    seq = next(_sent)
    await producer.publish(
        Control(session_id="panel", message_id=f"panel:{seq}", seq=seq, command=command)
    )


async def chunks(client: Redis, settings: BusSettings, turn: str) -> list[TtsChunk]:
    found = await read_topic(client, TTS_CHUNK, settings.partitions)
    return [c for c in found if isinstance(c, TtsChunk) and c.turn_id == turn]


async def publish_all(producer: Producer, tokens: list[PolicyToken]) -> None:
    for token in tokens:
        await producer.publish(token)


async def muted(runtime: StageRuntime[SpyTts], expected: int) -> None:
    async def done() -> bool:
        return runtime.stats(POLICY_TOKEN.name).muted >= expected

    await wait_until(done, what=f"{expected} tokens muted")


async def test_tts_switched_off_speaks_nothing_then_speaks_again(
    bus_settings: BusSettings, redis_client: Redis, producer: Producer
) -> None:
    async with tts_runtime(bus_settings) as tts:
        await send(producer, ModuleToggle(module="tts", enabled=False))

        async def off() -> bool:
            return tts.bus.switched_off()

        await wait_until(off, what="tts to switch off")
        silenced = reply(REPLY, turn="t1")
        await publish_all(producer, silenced)
        await muted(tts, len(silenced))
        assert await chunks(redis_client, bus_settings, "t1") == []
        assert (await read_switches(redis_client)).modules == {"tts": False}

        await send(producer, ModuleToggle(module="tts", enabled=True))
        await publish_all(producer, reply(REPLY, turn="t2"))

        async def spoken() -> bool:
            said = await chunks(redis_client, bus_settings, "t2")
            return bool(said) and said[-1].final

        await wait_until(spoken, what="tts to speak again")
        assert await chunks(redis_client, bus_settings, "t1") == [], "t1 is not spoken late"
    assert (await read_switches(redis_client)).modules == {"tts": True}


async def test_a_stage_started_after_the_control_history_is_still_off(
    bus_settings: BusSettings, redis_client: Redis, producer: Producer
) -> None:
    async with tts_runtime(bus_settings):
        await send(producer, ModuleToggle(module="tts", enabled=False))

        async def stored() -> bool:
            return (await read_switches(redis_client)).modules == {"tts": False}

        await wait_until(stored, what="the toggle to be stored")
    await redis_client.delete(CONTROL.name)  # nothing left in the history either
    forgetful = bus_settings.model_copy(update={"control_history_s": 0})
    async with tts_runtime(forgetful) as tts:
        assert tts.bus.switched_off(), "read from marionette:switches before serving"
        silenced = reply(REPLY, turn="t1")
        await publish_all(producer, silenced)
        await muted(tts, len(silenced))
        assert await chunks(redis_client, bus_settings, "t1") == []


async def test_panic_interrupts_the_turn_in_progress_and_mutes_until_over(
    bus_settings: BusSettings, redis_client: Redis, producer: Producer
) -> None:
    async with tts_runtime(bus_settings) as tts:
        tokens = reply(REPLY, turn="t1")
        await publish_all(producer, tokens[:6])

        async def speaking() -> bool:
            handled = tts.stats(POLICY_TOKEN.name).handled == 6
            return handled and bool(await chunks(redis_client, bus_settings, "t1"))

        await wait_until(speaking, what="t1 to be under way")
        await send(producer, Panic(engaged=True))

        async def interrupted() -> bool:
            return tts.stage.interrupted == [("s1", "t1")]

        await wait_until(interrupted, what="panic to interrupt t1")
        assert tts.interrupts.covers_turn("s1", "t1")
        assert tts.bus.switched_off()
        assert (await redis_client.hget(SWITCHES_KEY, "panic")) is not None
        spoken = len(await chunks(redis_client, bus_settings, "t1"))
        during = reply(REPLY, turn="t2")
        await publish_all(producer, during)
        await muted(tts, len(during))

        await send(producer, Panic(engaged=False))

        async def on() -> bool:
            return not tts.bus.switched_off()

        await wait_until(on, what="panic to be over")
        await publish_all(producer, [*tokens[6:], *reply(REPLY, turn="t3")])

        async def answered() -> bool:
            said = await chunks(redis_client, bus_settings, "t3")
            return bool(said) and said[-1].final

        await wait_until(answered, what="tts to speak after panic")
        assert len(await chunks(redis_client, bus_settings, "t1")) == spoken, "t1 stays cut"
        assert await chunks(redis_client, bus_settings, "t2") == []
        assert tts.stats(POLICY_TOKEN.name).stale == len(tokens) - 6
    board = await read_switches(redis_client)
    assert board.panic is False
    assert board.panic_at is not None


class Listener(Stage):
    """Neither interruptible nor a reader of control: the runtime follows control for it."""

    name = "listener"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.heard: list[str] = []

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, message: ChatMessage) -> None:
        self.heard.append(message.text)


async def test_any_stage_obeys_its_toggle(bus_settings: BusSettings) -> None:
    async with (
        Producer(bus_settings, "panel", [CONTROL, CHAT_MESSAGE]) as out,
        StageRuntime(Listener, bus_settings) as listener,
    ):
        await send(out, ModuleToggle(module="listener", enabled=False))

        async def off() -> bool:
            return listener.bus.switched_off()

        await wait_until(off, what="the listener to switch off")
        await out.publish(viewer_chat("s1", 0))

        async def muted_one() -> bool:
            return listener.stats(CHAT_MESSAGE.name).muted == 1

        await wait_until(muted_one, what="the chat line to be muted")
        await send(out, ModuleToggle(module="listener", enabled=True))

        async def on() -> bool:
            return not listener.bus.switched_off()

        await wait_until(on, what="the listener to switch on")
        await out.publish(viewer_chat("s1", 1))

        async def heard() -> bool:
            return listener.stage.heard == ["message 1"]

        await wait_until(heard, what="the next chat line to be heard")


async def test_the_stored_switch_is_written_only_when_newer(redis_client: Redis) -> None:
    assert await store_switch(redis_client, ModuleToggle(module="tts", enabled=False), 10.0)
    assert not await store_switch(redis_client, ModuleToggle(module="tts", enabled=True), 9.5)
    assert not await store_switch(redis_client, ModuleToggle(module="tts", enabled=True), 10.0)
    assert await store_switch(redis_client, Panic(engaged=True), 3.0)
    await redis_client.hset(SWITCHES_KEY, "module:broken", "not json")
    board = await read_switches(redis_client)
    assert board.modules == {"tts": False}
    assert board.modules_at == {"tts": 10.0}
    assert (board.panic, board.panic_at) == (True, 3.0)
    raw = await redis_client.hget(SWITCHES_KEY, "module:tts")
    assert raw is not None
    assert json.loads(raw) == {"enabled": False, "at": 10.0}
