"""policy in memory: NPC turns (a chat naming a persona file) and the memory commands
(MemoryClear, MemoryRestore) that the gateway's memory API publishes on control.

Several replicas are several harnesses on one shared store: each reads every control
message, as every policy replica does on Redis."""

import shutil
from pathlib import Path
from typing import Any

from contracts import ChatMessage, Control
from contracts.control import MemoryClear, MemoryRestore
from services.bus.harness import MemoryBus, MemoryKeyValue, StageHarness
from services.policy.memory import Memory, MemoryBackups
from services.policy.persona import BUNDLED_PERSONAS
from services.policy.settings import PolicySettings
from services.policy.stage import PolicyStage
from tests.unit.test_policy_stage import ScriptedBackend, final_of

NPC = "s-npc"


def replicas(
    backend: ScriptedBackend, count: int = 1, **overrides: Any
) -> list[StageHarness[PolicyStage]]:
    """`count` policy replicas sharing one store (persona, memory, backups)."""
    settings = PolicySettings(retry_backoff_ms=0, **overrides)
    shared = MemoryKeyValue()

    def build(bus: MemoryBus) -> PolicyStage:
        bus.store = shared
        return PolicyStage(settings, backend, bus)

    return [StageHarness(build) for _ in range(count)]


def chat(text: str, turn: str, session: str = "s1", persona: str | None = None) -> ChatMessage:
    return ChatMessage(
        session_id=session, turn_id=turn, seq=0, platform="gateway", author="alice",
        text=text, persona=persona,
    )  # fmt: skip


def memory_command(command: MemoryClear | MemoryRestore, n: int, session: str = "s1") -> Control:
    return Control(session_id=session, message_id=f"gw-control-{n}:0", seq=0, command=command)


async def memory_of(policy: StageHarness[PolicyStage], session: str = "s1") -> Memory:
    return await policy.stage.memories.load(session)


def said(memory: Memory) -> list[str]:
    return [m.content for m in memory.messages]


# --- clear and restore ----------------------------------------------------------------


async def test_a_clear_keeps_a_backup_that_a_restore_brings_back() -> None:
    (policy,) = replicas(ScriptedBackend())
    await policy.send(chat("My cat is Pickles.", "t1"), chat("And my dog is Rex.", "t2"))
    before = await memory_of(policy)
    assert len(before.messages) == 4

    await policy.send(memory_command(MemoryClear(backup_id="b1"), 1))
    assert (await memory_of(policy)).messages == []
    (listed,) = await policy.stage.backups.index("s1")
    assert (listed.id, listed.messages) == ("b1", 4)

    await policy.send(memory_command(MemoryRestore(backup_id="b1"), 2))
    assert said(await memory_of(policy)) == said(before)
    assert await policy.stage.backups.index("s1") == [listed], "a restore keeps the backup"


async def test_a_clear_touches_only_its_own_session() -> None:
    (policy,) = replicas(ScriptedBackend())
    await policy.send(chat("hi", "t1", session="a"), chat("hi", "t1", session="b"))
    await policy.send(memory_command(MemoryClear(backup_id="b1"), 1, session="a"))
    assert (await memory_of(policy, "a")).messages == []
    assert len((await memory_of(policy, "b")).messages) == 2
    assert await policy.stage.backups.index("b") == []


async def test_restoring_a_backup_that_is_not_there_changes_nothing() -> None:
    (policy,) = replicas(ScriptedBackend())
    await policy.send(chat("hi", "t1"))
    await policy.send(memory_command(MemoryRestore(backup_id="nope"), 1))
    assert len((await memory_of(policy)).messages) == 2


async def test_each_command_is_applied_once_although_every_replica_reads_it() -> None:
    first, second = replicas(ScriptedBackend(), count=2)
    await first.send(chat("My cat is Pickles.", "t1"))
    clear = memory_command(MemoryClear(backup_id="b1"), 1)
    await first.send(clear)
    await first.send(chat("Something new.", "t2"))
    # The other replica reads the same clear later: applied again, it would wipe the new
    # exchange and overwrite the backup with it.
    await second.send(clear)
    assert said(await memory_of(first))[0] == "alice (in chat): «Something new.»"
    backup = await first.stage.backups.get("s1", "b1")
    assert backup is not None
    assert said(backup.memory)[0] == "alice (in chat): «My cat is Pickles.»"

    restore = memory_command(MemoryRestore(backup_id="b1"), 2)
    await second.send(restore)
    await second.send(chat("After the restore.", "t3"))
    await first.send(restore)  # read again by the first: the newer exchange stays
    assert said(await memory_of(first))[-2] == "alice (in chat): «After the restore.»"
    assert len(await first.stage.backups.index("s1")) == 1


async def test_backups_past_their_retention_are_not_listed() -> None:
    store = MemoryKeyValue()
    await MemoryBackups(store, retention_s=3600).keep("s1", "old", Memory())
    assert [b.id for b in await MemoryBackups(store, retention_s=3600).index("s1")] == ["old"]
    assert await MemoryBackups(store, retention_s=0).index("s1") == []


# --- NPC turns -------------------------------------------------------------------------


def npc_dir(tmp_path: Path) -> Path:
    shutil.copy(BUNDLED_PERSONAS / "grumpy.toml", tmp_path / "wizard.toml")
    return tmp_path


async def test_a_chat_naming_a_persona_is_answered_as_that_file(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    (policy,) = replicas(backend, personas_dir=npc_dir(tmp_path))
    await policy.send(chat("Hello!", "t1", session="wizard:alice", persona="wizard"))
    await policy.send(chat("Hello!", "t1", session="s1"))
    npc_prompt, live_prompt = (messages for messages, _ in backend.replies_asked)
    assert "You are Grum" in npc_prompt[0]["content"]
    assert "You are Mari" in live_prompt[0]["content"], "the live persona is unchanged"
    assert (await policy.stage.personas.current()).name == "Mari"
    assert said(await memory_of(policy, "wizard:alice"))[0] == "alice (in chat): «Hello!»"


async def test_an_npc_persona_file_is_read_again_once_it_changes(tmp_path: Path) -> None:
    (policy,) = replicas(ScriptedBackend(), personas_dir=npc_dir(tmp_path))
    assert policy.stage.personas.named("wizard").name == "Grum"
    assert policy.stage.personas.named("wizard") is policy.stage.personas.named("wizard")
    file = tmp_path / "wizard.toml"
    file.write_text(file.read_text().replace('name = "Grum"', 'name = "Merlin"'))
    assert policy.stage.personas.named("wizard").name == "Merlin"


async def test_a_turn_for_a_missing_persona_ends_with_an_error_and_is_not_remembered(
    tmp_path: Path,
) -> None:
    backend = ScriptedBackend()
    (policy,) = replicas(backend, personas_dir=tmp_path)
    published = await policy.send(chat("Hello!", "t1", session="ghost:alice", persona="ghost"))
    final = final_of(published)
    assert (final.status, final.reply_text) == ("error", "")
    assert backend.replies_asked == []
    assert (await memory_of(policy, "ghost:alice")).messages == []
