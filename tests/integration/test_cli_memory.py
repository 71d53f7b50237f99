"""`marionette memory ...` in process (typer's CliRunner) on a real sqlite-vec store in the
test's folder (or the suite's real Redis) with the real embedder: import, search, export,
reset, backups, restore, forgetting a viewer, and the errors that name the fix."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from redis.asyncio import Redis
from typer.testing import CliRunner

from contracts import Control
from contracts.control import MemoryForget
from contracts.topics import CONTROL
from services.bus import BusSettings
from services.cli.app import app
from tests.helpers import read_topic
from tests.integration.test_gateway_long_term import QUERIES, SEED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ADA = "character:ada"
BOB = "session:npc-bob"


@pytest.fixture
def memory_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, bus_settings: BusSettings
) -> Path:
    """The CLI's settings: a store of this test's own, and the suite's Redis for the bus."""
    path = tmp_path / "memory" / "long-term.sqlite3"
    monkeypatch.setenv("MARIONETTE_MEMORY_PATH", str(path))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("MARIONETTE_PARTITIONS", str(bus_settings.partitions))
    monkeypatch.chdir(tmp_path)  # no `marionette up` state file of the developer's
    return path


def memory(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["memory", *args], input=stdin)


def said(result: Result) -> str:
    """What the command printed, lines joined (rich wraps at the 80 columns of a test)."""
    return " ".join(result.output.replace("│", " ").split())


def ok(*args: str, stdin: str | None = None) -> Result:
    result = memory(*args, stdin=stdin)
    assert result.exit_code == 0, result.output
    return result


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def seed_file(tmp_path: Path, items: list[dict[str, Any]] = SEED) -> Path:
    path = tmp_path / f"seed-{len(items)}.json"
    path.write_text(json.dumps({"items": items}))
    return path


def search_all(scope: str) -> dict[str, list[tuple[str, float]]]:
    return {
        query: [(hit["item"]["id"], hit["score"]) for hit in as_json("search", scope, query)]
        for query in QUERIES
    }


def exported(scope: str, tmp_path: Path) -> dict[str, Any]:
    target = tmp_path / f"export-{scope.replace(':', '_')}.json"
    ok("export", scope, "-o", str(target))
    document: dict[str, Any] = json.loads(target.read_text())
    return document


def test_import_then_scopes_stats_search_and_export(memory_env: Path, tmp_path: Path) -> None:
    imported = ok("import", ADA, str(seed_file(tmp_path)))
    again = ok("import", ADA, str(seed_file(tmp_path)))
    scopes = as_json("scopes")
    stats = as_json("stats", ADA)
    hits = as_json("search", ADA, QUERIES[0])
    bobs = as_json("search", ADA, QUERIES[0], "--author", "bob")
    table = ok("search", ADA, QUERIES[0])
    document = exported(ADA, tmp_path)
    to_stdout = json.loads(ok("export", ADA).stdout)

    assert "imported 5 item(s) into character:ada: 5 new" in said(imported)
    assert "0 new" in said(again)
    assert [(s["scope"], s["items"]) for s in scopes] == [(ADA, 5)]
    assert stats["by_kind"] == {"fact": 3, "episode": 1, "note": 1}
    assert stats["backups"] == 0
    assert hits[0]["item"]["text"] == "ada said: my cat is called Miso"
    assert {hit["item"]["author"] for hit in bobs} == {"bob"}
    assert "Miso" in table.stdout
    assert document["scope"] == ADA
    assert document["embedder"] == "all-MiniLM-L6-v2"
    assert [i["created_at"][-3:] for i in document["items"]] == ["00Z", "01Z", "02Z", "03Z", "04Z"]
    assert to_stdout["items"] == document["items"]
    assert memory_env.exists()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_reset_asks_first_keeps_a_backup_and_restore_brings_it_back(
    store: str, memory_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARIONETTE_MEMORY_STORE", store)
    ok("import", ADA, str(seed_file(tmp_path)))
    before = exported(ADA, tmp_path)["items"]
    searches = search_all(ADA)

    declined = memory("reset", ADA, stdin="n\n")
    assert declined.exit_code == 1
    assert as_json("stats", ADA)["items"] == 5

    on_demand = ok("backup", ADA, "--reason", "before the show").stdout.split()[-1]
    reset = ok("reset", ADA, stdin="y\n").stdout.split()[-1]
    assert as_json("stats", ADA)["items"] == 0
    assert as_json("search", ADA, QUERIES[0]) == []
    backups = as_json("backups", ADA)
    assert [(b["id"], b["reason"], b["items"]) for b in backups] == [
        (reset, "reset", 5),
        (on_demand, "before the show", 5),
    ]
    assert reset in ok("backups", ADA).stdout  # the table shows whole ids

    ok("import", ADA, str(seed_file(tmp_path, SEED[:1])))  # memory goes on after a reset
    declined = memory("restore", ADA, reset, stdin="n\n")
    assert declined.exit_code == 1
    restored = ok("restore", ADA, reset, "--yes")
    assert "5 item(s)" in said(restored)
    assert exported(ADA, tmp_path)["items"] == before
    assert search_all(ADA) == searches  # the backup's own vectors: exactly the same

    unknown = memory("restore", ADA, "20200101T000000-00000000", "--yes")
    assert unknown.exit_code == 2
    assert "marionette memory backups character:ada" in said(unknown)


def test_an_export_imported_into_a_new_store_is_the_same_memory(
    memory_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok("import", ADA, str(seed_file(tmp_path)))
    document = exported(ADA, tmp_path)
    searches = search_all(ADA)
    export_file = tmp_path / "export-character_ada.json"

    monkeypatch.setenv("MARIONETTE_MEMORY_PATH", str(tmp_path / "elsewhere.sqlite3"))
    assert as_json("scopes") == []
    ok("import", ADA, "-", stdin=export_file.read_text())
    moved = ok("import", BOB, str(export_file))

    assert exported(ADA, tmp_path)["items"] == document["items"]
    after = search_all(ADA)
    for query in QUERIES:
        assert [i for i, _ in after[query]] == [i for i, _ in searches[query]]
        assert [s for _, s in after[query]] == pytest.approx([s for _, s in searches[query]])
    assert "5 new" in said(moved)
    assert {i["scope"] for i in exported(BOB, tmp_path)["items"]} == {BOB}


def test_forget_viewer_deletes_their_items_and_publishes_memory_forget(
    memory_env: Path, tmp_path: Path, redis_url: str, bus_settings: BusSettings
) -> None:
    ok("import", ADA, str(seed_file(tmp_path)))
    ok("import", BOB, str(seed_file(tmp_path, SEED[:3])))
    backup = ok("backup", ADA).stdout.split()[-1]

    declined = memory("forget-viewer", "ada", stdin="n\n")
    assert declined.exit_code == 1
    assert as_json("stats", ADA)["items"] == 5
    forgot = ok("forget-viewer", "ada", "--yes")

    assert "forgot ada: 4 long-term item(s) deleted" in said(forgot)
    assert {i["author"] for i in exported(ADA, tmp_path)["items"]} == {"bob", None}
    assert {i["author"] for i in exported(BOB, tmp_path)["items"]} == {"bob"}
    ok("restore", ADA, backup, "--yes")  # backups kept nothing of theirs either
    assert "ada" not in {i["author"] for i in exported(ADA, tmp_path)["items"]}
    published = asyncio.run(controls(redis_url, bus_settings.partitions))
    assert [(m.session_id, m.command) for m in published] == [
        ("control", MemoryForget(author="ada"))
    ]


async def controls(redis_url: str, partitions: int) -> list[Control]:
    client = Redis.from_url(redis_url)
    try:
        return [m for m in await read_topic(client, CONTROL, partitions) if isinstance(m, Control)]
    finally:
        await client.aclose()


def test_errors_name_the_fix(
    memory_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_json = tmp_path / "notes.txt"
    not_json.write_text("my cat is called Miso")
    short_term = tmp_path / "short-term.json"
    short_term.write_text(json.dumps({"session": "s1", "memory": {"turns": []}}))
    bad_item = seed_file(tmp_path, [SEED[0], {"kind": "fact"}])

    failures = {
        "not json": memory("import", ADA, str(not_json)),
        "not an export": memory("import", ADA, str(short_term)),
        "bad item": memory("import", ADA, str(bad_item)),
        "no file": memory("import", ADA, str(tmp_path / "missing.json")),
        "bad scope": memory("stats", "no spaces"),
    }
    assert {name: r.exit_code for name, r in failures.items()} == dict.fromkeys(failures, 2)
    assert "give a file `marionette memory export` wrote" in said(failures["not json"])
    assert "needs an `items` list" in said(failures["not an export"])
    assert "items.1.text" in said(failures["bad item"])
    assert "give an export's file" in said(failures["no file"])
    assert "marionette memory scopes" in said(failures["bad scope"])
    assert "Traceback" not in "".join(said(r) for r in failures.values())
    assert as_json("scopes") == []  # nothing was stored by a refused import

    monkeypatch.setenv("MARIONETTE_MEMORY_LONG_TERM", "false")
    off = memory("scopes")
    assert off.exit_code == 2
    assert "MARIONETTE_MEMORY_LONG_TERM=true" in said(off)

    monkeypatch.delenv("REDIS_URL")
    no_redis = memory("forget-viewer", "ada", "--yes")
    assert no_redis.exit_code == 2
    assert "set REDIS_URL" in said(no_redis)
