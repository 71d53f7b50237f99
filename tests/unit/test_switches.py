"""Module toggles and panic: the newest-wins rules, and stages obeying them in memory."""

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import numpy as np
import pytest

from contracts import (
    ChatMessage,
    Control,
    ModuleToggle,
    Panic,
    PersonaChange,
    PlaybackProgress,
    PolicyToken,
    TtsChunk,
)
from contracts.control import Command
from services.bus.harness import MemoryBus, StageHarness
from services.bus.switches import StageSwitch, SwitchBoard, Switches, TurnsInProgress
from services.capture.settings import CaptureSettings
from services.capture.stage import CaptureStage
from services.policy.stage import PolicyStage
from services.tts.settings import TtsSettings
from services.tts.stage import TtsStage
from tests.unit.test_policy_stage import ScriptedBackend, chat, final_of, settings
from tests.unit.test_tts_stage import REPLY, FakeSynthesizer, reply

T0 = datetime(2025, 1, 1, tzinfo=UTC)
_ids = count()


def control(command: Command, at_s: float) -> Control:
    """A control message made `at_s` seconds after T0 (its created_at decides what wins)."""
    seq = next(_ids)
    return Control(
        session_id="panel", message_id=f"panel:{seq}", seq=seq, command=command,
        created_at=T0 + timedelta(seconds=at_s),
    )  # fmt: skip


def toggle(module: str, enabled: bool, at_s: float) -> Control:
    return control(ModuleToggle(module=module, enabled=enabled), at_s)


def panic(engaged: bool, at_s: float) -> Control:
    return control(Panic(engaged=engaged), at_s)


# --- the rules ----------------------------------------------------------------------------


def test_a_module_is_on_until_toggled_off_and_the_newest_toggle_wins() -> None:
    switches = Switches()
    assert not switches.off("tts")
    assert switches.apply(ModuleToggle(module="tts", enabled=False), 10.0)
    assert switches.off("tts")
    assert not switches.off("policy"), "one module at a time"
    assert not switches.apply(ModuleToggle(module="tts", enabled=True), 9.0), "older"
    assert not switches.apply(ModuleToggle(module="tts", enabled=True), 10.0), "as old"
    assert switches.off("tts")
    assert switches.apply(ModuleToggle(module="tts", enabled=True), 11.0)
    assert not switches.off("tts")
    assert switches.board.modules == {"tts": True}
    assert switches.board.modules_at == {"tts": 11.0}


def test_panic_switches_off_all_but_gateway_and_monitor_and_leaves_toggles_as_they_were() -> None:
    switches = Switches()
    switches.apply(ModuleToggle(module="asr", enabled=False), 1.0)
    switches.apply(Panic(engaged=True), 2.0)
    assert [m for m in ("asr", "policy", "tts", "capture", "newcomer") if switches.off(m)] == [
        "asr", "policy", "tts", "capture", "newcomer",
    ]  # fmt: skip
    assert not switches.off("gateway")
    assert not switches.off("monitor")
    assert not switches.apply(Panic(engaged=False), 1.5), "an older panic is ignored"
    assert switches.panic
    assert switches.apply(Panic(engaged=False), 3.0)
    assert switches.off("asr"), "still toggled off"
    assert not switches.off("policy")


def test_restoring_takes_only_what_is_newer_than_known() -> None:
    switches = Switches()
    switches.apply(ModuleToggle(module="tts", enabled=True), 5.0)
    stored = SwitchBoard(
        modules={"tts": False, "asr": False}, modules_at={"tts": 4.0, "asr": 4.0},
        panic=True, panic_at=4.0,
    )  # fmt: skip
    switches.restore(stored)
    assert not switches.off("gateway")
    assert switches.board.modules == {"tts": True, "asr": False}
    assert switches.panic
    assert stored.off("tts")
    assert not stored.off("monitor")


def token(turn: str, final: bool = False, session: str = "s1") -> PolicyToken:
    ending = {"final": True, "reply_text": "x", "status": "ok"} if final else {}
    return PolicyToken(session_id=session, turn_id=turn, seq=0, index=0, text="x", **ending)


def test_turns_in_progress_end_with_the_message_that_ends_them() -> None:
    turns = TurnsInProgress(per_session=2)
    for turn in ("t1", "t2", "t3"):
        turns.started(token(turn))
    turns.started(token("t9", session="s2"))
    turns.finished(token("t3"))  # not its end
    assert len(turns) == 3, "two a session at most"
    turns.finished(token("t3", final=True))
    turns.finished(
        PlaybackProgress(session_id="s2", turn_id="t9", seq=0, chunk_index=0, played_s=1.0,
                         state="finished")
    )  # fmt: skip
    assert turns.take() == [("s1", "t2")]
    assert len(turns) == 0


async def test_each_change_is_logged_and_panic_interrupts_all_but_exempt_stages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    interrupted: list[tuple[str, str]] = []

    async def interrupt(session: str, turn: str) -> None:
        interrupted.append((session, turn))

    tts = StageSwitch("tts", interrupt=interrupt)
    monitor = StageSwitch("monitor", interrupt=interrupt)
    for switch in (tts, monitor):
        switch.turns.started(token("t1"))
    with caplog.at_level(logging.INFO, logger="marionette.bus"):
        await tts.follow(toggle("tts", False, 1))
        await tts.follow(toggle("tts", False, 0.5))  # older: nothing happens
        await tts.follow(toggle("policy", False, 2))  # not tts: applied, not logged
        await monitor.follow(panic(True, 3))
        await tts.follow(panic(True, 3))
        await tts.follow(toggle("tts", True, 4))
        await tts.follow(panic(False, 5))
    assert [r.getMessage() for r in caplog.records] == [
        "tts: switched off (module toggle)",
        "monitor: stays on (panic; exempt)",
        "tts: stays off (panic; its toggle holds it)",
        "tts: stays off (module toggle; panic holds it)",
        "tts: switched on (panic over)",
    ]
    assert interrupted == [("s1", "t1")], "panic, not a toggle, interrupts; it spares monitor"


# --- stages in memory -----------------------------------------------------------------------


def assert_spoken(chunks: list[Any], turn: str) -> None:
    """A whole reply of that turn was spoken."""
    assert chunks, "spoken"
    assert {c.turn_id for c in chunks} == {turn}
    assert chunks[-1].final


class SpyTts(TtsStage):
    def __init__(self, bus: MemoryBus) -> None:
        super().__init__(TtsSettings(), FakeSynthesizer(), bus)
        self.interrupted: list[tuple[str, str]] = []

    async def on_interrupt(self, session_id: str, turn_id: str) -> None:
        self.interrupted.append((session_id, turn_id))
        await super().on_interrupt(session_id, turn_id)


async def test_a_tts_switched_off_speaks_nothing_and_speaks_again_once_on() -> None:
    tts = StageHarness(SpyTts)
    await tts.send(toggle("tts", False, 1))
    assert tts.bus.switched_off()
    assert await tts.send(*reply(REPLY, turn="t1")) == []
    assert tts.stored.unacknowledged == [], "acknowledged, not left for later"
    await tts.send(toggle("tts", True, 2))
    assert_spoken(await tts.send(*reply(REPLY, turn="t2")), "t2")


async def test_a_stale_toggle_does_not_override_a_newer_one() -> None:
    tts = StageHarness(SpyTts)
    await tts.send(toggle("tts", False, 2), toggle("tts", True, 1))
    assert await tts.send(*reply(REPLY)) == []
    await tts.send(toggle("tts", True, 3), toggle("tts", False, 2.5))
    assert await tts.send(*reply(REPLY, turn="t2")) != []


async def test_a_stage_restarted_remembers_its_switches() -> None:
    tts = StageHarness(SpyTts)
    await tts.send(toggle("tts", False, 1))
    await tts.restart()
    assert await tts.send(*reply(REPLY)) == []


async def test_panic_interrupts_the_turn_in_progress_and_mutes_until_over() -> None:
    tts = StageHarness(SpyTts)
    tokens = reply(REPLY, turn="t1")
    spoken: list[TtsChunk] = await tts.send(*tokens[:6])  # type: ignore[assignment]
    assert spoken, "t1 is in progress"
    assert not spoken[-1].final
    await tts.send(panic(True, 1))
    assert tts.stage.interrupted == [("s1", "t1")]
    assert not await tts.stage.speech.load("s1", "t1"), "its state is gone"
    assert await tts.send(*reply(REPLY, turn="t2")) == [], "muted"
    await tts.send(panic(False, 2))
    assert await tts.send(*tokens[6:]) == [], "the interrupted turn's late tokens are dropped"
    assert_spoken(await tts.send(*reply(REPLY, turn="t3")), "t3")
    assert tts.stage.interrupted == [("s1", "t1")], "only the turn in progress"


async def test_a_paused_policy_answers_nothing_but_still_follows_control() -> None:
    backend = ScriptedBackend()
    policy = StageHarness(lambda bus: PolicyStage(settings(), backend, bus))
    await policy.send(toggle("policy", False, 1))
    assert await policy.send(chat("hello", turn="t1")) == []
    assert backend.replies_asked == []
    await policy.send(control(PersonaChange(persona="grumpy"), 2))
    assert (await policy.stage.personas.current()).name == "Grum", "control still handled"
    await policy.send(toggle("policy", True, 3))
    assert final_of(await policy.send(chat("hello", turn="t2")), "t2").status == "ok"


async def test_panic_stops_a_reply_mid_way() -> None:
    backend = ScriptedBackend()
    policy = StageHarness(lambda bus: PolicyStage(settings(), backend, bus))
    backend.hold.after(3)
    replying = asyncio.create_task(policy.send(chat("tell me a story", turn="t1")))
    await backend.hold.holding()
    await policy.send(panic(True, 1))
    backend.hold.release()
    await replying
    assert final_of(policy.published(), "t1").status == "interrupted"
    assert await policy.send(chat("anyone there?", turn="t2")) == []
    await policy.send(panic(False, 2))
    assert final_of(await policy.send(chat("hello", turn="t3")), "t3").status == "ok"


async def test_memory_keeps_what_was_heard_of_a_reply_a_panic_cut_short() -> None:
    """Policy is off during a panic, but what playback says was heard still reaches it:
    bookkeeping (while_off), not output."""
    backend = ScriptedBackend()
    policy = StageHarness(lambda bus: PolicyStage(settings(), backend, bus))
    await policy.send(chat("tell me a story", turn="t1"))
    await policy.send(panic(True, 1))
    heard = PlaybackProgress(
        session_id="s1", turn_id="t1", seq=3, chunk_index=0, played_s=0.8, state="flushed",
        heard_text="Hello there,",
    )  # fmt: skip
    await policy.send(heard)
    said = (await policy.stage.memories.load("s1")).messages[-1]
    assert (said.content, said.interrupted) == ("Hello there,", True)


class Tone:
    """A 16 kHz source of `blocks` blocks of 0.1 s; after the first, `between` runs."""

    sample_rate = 16_000
    channels = 1
    realtime_source = False

    def __init__(self, blocks: int, between: list[ChatMessage | Control]) -> None:
        self.count = blocks
        self.between = between
        self.harness: StageHarness[CaptureStage] | None = None

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        for number in range(self.count):
            if number == 1 and self.harness is not None:
                await self.harness.send(*self.between)
            yield np.full((1600, 1), 0.1, dtype=np.float32)


async def test_capture_switched_off_reads_its_input_but_publishes_nothing() -> None:
    source = Tone(blocks=3, between=[toggle("capture", False, 1)])
    capture = StageHarness(lambda bus: CaptureStage(CaptureSettings(realtime=False), source, bus))
    source.harness = capture
    published = await capture.stage.capture()
    frames = capture.published()
    assert published == len(frames) == 5, "the first block's 5 frames, then nothing"
    assert [f.seq for f in frames] == list(range(5))

    await capture.send(toggle("capture", True, 2))
    source.between = []
    assert await capture.stage.capture() == 3 * 5 + 1, "every frame and the padded last"
