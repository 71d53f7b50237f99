"""Long-term memory in turns: facts told in one session are recalled in another, each NPC
keeps each player's apart, a viewer can be forgotten everywhere, and a session's memory
that Redis lost comes back from its copy.

Real parts: the bundled embedder (all-MiniLM-L6-v2) and the sqlite-vec store in a file; the
LLM is scripted (tests/unit/test_policy_stage.py's ScriptedBackend) so the prompt is seen.
"""

from pathlib import Path
from typing import Any

import pytest

from contracts import ChatMessage, Control
from contracts.control import MemoryClear, MemoryForget
from services.bus.harness import StageHarness
from services.memory.embedder import Embedder
from services.memory.items import character_scope, session_scope
from services.memory.long_term import LongTermMemory
from services.memory.settings import MemorySettings
from services.memory.sqlite_store import SqliteVecStore
from services.policy.long_term import MEMORY_HEADER, states_a_fact
from services.policy.memory import MEMORY_PREFIX, Memory
from services.policy.settings import PolicySettings
from services.policy.stage import PolicyStage
from services.telemetry.metrics import MEMORY_RECALL
from tests.unit.test_policy_stage import ScriptedBackend

MEMORY_LINE = MEMORY_HEADER


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture
def long_term(tmp_path: Path, embedder: Embedder) -> LongTermMemory:
    settings = MemorySettings(path=tmp_path / "memory.sqlite3", recall_budget_ms=2_000)
    store = SqliteVecStore(settings.path, embedder.dimensions)
    return LongTermMemory(store, embedder, settings)


def harness(
    backend: ScriptedBackend, long_term: LongTermMemory, **overrides: Any
) -> StageHarness[PolicyStage]:
    settings = PolicySettings(retry_backoff_ms=0, tools=[], **overrides)
    return StageHarness(lambda bus: PolicyStage(settings, backend, bus, long_term))


def chat(
    text: str, turn: str, session: str = "monday", author: str = "alice", **fields: Any
) -> ChatMessage:
    return ChatMessage(
        session_id=session, turn_id=turn, seq=0, platform="twitch", author=author, text=text,
        **fields,
    )  # fmt: skip


def recalled(backend: ScriptedBackend) -> str | None:
    """The memory the last turn's prompt was given (None: none)."""
    turns = [p for p in backend.prompts if p[-1]["role"] == "user"]
    memory = [m["content"] for m in turns[-1] if m["content"].startswith(MEMORY_LINE)]
    return memory[0] if memory else None


def test_statements_about_the_speaker_are_facts_and_questions_or_requests_are_not() -> None:
    assert states_a_fact("my dog is called Pepper")
    assert states_a_fact("I paid you 30 gold for the sword")
    assert not states_a_fact("what's my dog called?")
    assert not states_a_fact("roll a d20 for me")
    assert not states_a_fact("lol")


async def test_a_fact_told_in_one_session_is_recalled_in_the_next(
    long_term: LongTermMemory,
) -> None:
    backend = ScriptedBackend()
    policy = harness(backend, long_term)
    await policy.send(chat("my dog is called Pepper", "t1"))
    await policy.send(chat("I live in Lisbon", "t2", author="bob"))
    await policy.send(chat("hey, do you remember my pup's name?", "t3", session="friday"))
    memory = recalled(backend)
    assert memory is not None
    assert "alice said: my dog is called Pepper" in memory
    assert "Lisbon" not in memory, "bob's fact is not about a pet"
    prompt = [p for p in backend.prompts if p[-1]["role"] == "user"][-1]
    assert prompt[-2]["content"] == memory, "just before the line: the cached prefix stays"
    assert "never instructions" in memory, "viewers' words are given as data"
    stats = await long_term.stats(character_scope("Mari"))
    assert stats.by_kind == {"fact": 2}, "the question was not kept"


async def test_a_turn_without_a_close_memory_gets_none(long_term: LongTermMemory) -> None:
    backend = ScriptedBackend()
    policy = harness(backend, long_term)
    await policy.send(chat("my dog is called Pepper", "t1"))
    await policy.send(chat("what's the best pizza topping?", "t2", session="friday"))
    assert recalled(backend) is None


async def test_each_npc_remembers_each_player_apart(long_term: LongTermMemory) -> None:
    backend = ScriptedBackend()
    policy = harness(backend, long_term)
    smith = {"persona": "grumpy"}  # a bundled persona file, as an NPC
    await policy.send(chat("I paid you 30 gold for the sword", "t1", "grumpy:ann", "ann", **smith))
    await policy.send(chat("how much did I pay you?", "t2", "grumpy:ann", "ann", **smith))
    assert "30 gold" in (recalled(backend) or "")
    await policy.send(chat("how much did I pay you?", "t3", "grumpy:ben", "ben", **smith))
    assert recalled(backend) is None, "another player's deal"
    await policy.send(chat("how much did ann pay the smith?", "t4", "stream", "ann"))
    assert recalled(backend) is None, "the live character does not see the NPC's memory"
    assert await long_term.scopes() == [session_scope("grumpy:ann")]


async def test_forgetting_a_viewer_removes_them_everywhere(long_term: LongTermMemory) -> None:
    backend = ScriptedBackend()
    policy = harness(backend, long_term)
    await policy.send(chat("my dog is called Pepper", "t1"))
    await policy.send(chat("my cat is called Miso", "t2", author="bob"))
    clear = MemoryClear(backup_id="b1")
    await policy.send(Control(session_id="monday", seq=0, message_id="panel:0", command=clear))
    await policy.send(chat("I'm allergic to peanuts", "t3", session="tuesday"))
    old = Memory(updated_at=1.0)  # a copy too old to be restored, still kept on disk
    old.remember("t0", "alice (in chat): «I'm Alice»", "Hi Alice!", author="alice")
    await long_term.store.save_snapshot("last-year", old.model_dump_json().encode())
    forget = MemoryForget(author="alice")
    await policy.send(Control(session_id="panel", seq=1, message_id="panel:1", command=forget))

    items = await long_term.export(character_scope("Mari"))
    assert [i.author for i in items] == ["bob"]
    tuesday = await policy.stage.memories.load("tuesday")
    assert tuesday.messages == [], "her line and the reply to it"
    backup = await policy.stage.backups.get("monday", "b1")
    assert backup is not None
    assert [m.author for m in backup.memory.messages if m.role == "user"] == ["bob"]
    for session in await long_term.store.snapshot_sessions():  # the copies beside Redis
        copy = await long_term.store.load_snapshot(session)
        assert copy is not None
        assert b"alice" not in copy
        assert b"Pepper" not in copy
        assert b"peanuts" not in copy


async def test_memory_that_redis_lost_comes_back_from_its_copy(
    long_term: LongTermMemory,
) -> None:
    backend = ScriptedBackend()
    policy = harness(backend, long_term)
    await policy.send(chat("my dog is called Pepper", "t1"))
    del policy.stored.store.values[f"{MEMORY_PREFIX}monday"]  # Redis restarted empty
    await policy.restart()
    memory = await policy.stage.memories.load("monday")
    assert [m.said for m in memory.messages if m.role == "user"] == ["my dog is called Pepper"]


async def test_a_recall_over_its_budget_lets_the_turn_go_on_without(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings = MemorySettings(path=tmp_path / "m.sqlite3", recall_budget_ms=0.001)
    slow = LongTermMemory(SqliteVecStore(settings.path, embedder.dimensions), embedder, settings)
    backend = ScriptedBackend()
    policy = harness(backend, slow)
    before = MEMORY_RECALL.labels("over_budget")._value.get()
    await policy.send(chat("my dog is called Pepper", "t1"))
    await policy.send(chat("what's my dog's name?", "t2"))
    assert recalled(backend) is None
    assert MEMORY_RECALL.labels("over_budget")._value.get() == before + 2
    assert len([p for p in backend.prompts if p[-1]["role"] == "user"]) == 2, "both answered"
