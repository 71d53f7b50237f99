"""The AsyncAPI document: generated from the contracts and stages, kept current by a check."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import services.bus.asyncapi as asyncapi_module
from contracts import SCHEMA_VERSION
from contracts.topics import ALL_TOPICS
from services.bus.asyncapi import DOCUMENT_PATH, build_document
from services.cli.app import app
from services.registry import STAGES, stage_class

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def document_text() -> str:
    return build_document([stage_class(name) for name in sorted(STAGES)])


@pytest.fixture(scope="module")
def document(document_text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(document_text)
    return parsed


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


# --- the committed document ---------------------------------------------------------------


def test_check_passes_on_the_committed_document() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services", "asyncapi", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_committed_document_is_the_generated_one(document_text: str) -> None:
    assert DOCUMENT_PATH.read_text() == document_text


# --- the staleness check ------------------------------------------------------------------


@pytest.fixture
def document_at(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point `marionette asyncapi` at a scratch file instead of contracts/asyncapi.json."""
    path = tmp_path / "asyncapi.json"
    monkeypatch.setattr(asyncapi_module, "DOCUMENT_PATH", path)
    return path


def test_check_fails_on_a_stale_document(document_at: Path, document_text: str) -> None:
    stale = json.loads(document_text)
    del stale["channels"]["control:contract"]
    document_at.write_text(json.dumps(stale, indent=2, sort_keys=True) + "\n")

    result = CliRunner().invoke(app, ["asyncapi", "--check"])

    assert result.exit_code == 2
    assert "stale" in result.output
    assert "marionette asyncapi" in result.output


def test_check_fails_on_a_missing_document(document_at: Path) -> None:
    result = CliRunner().invoke(app, ["asyncapi", "--check"])
    assert result.exit_code == 2
    assert not document_at.exists()


def test_check_fails_on_a_whitespace_change(document_at: Path, document_text: str) -> None:
    document_at.write_text(document_text.rstrip("\n"))
    assert CliRunner().invoke(app, ["asyncapi", "--check"]).exit_code == 2


def test_writing_the_document_makes_the_check_pass(document_at: Path, document_text: str) -> None:
    document_at.write_text("{}\n")

    written = CliRunner().invoke(app, ["asyncapi"])
    assert written.exit_code == 0, written.output
    assert document_at.read_text() == document_text

    checked = CliRunner().invoke(app, ["asyncapi", "--check"])
    assert checked.exit_code == 0, checked.output


# --- what the document says ---------------------------------------------------------------


def test_build_document_is_deterministic(document_text: str) -> None:
    assert build_document([stage_class(name) for name in sorted(STAGES)]) == document_text
    assert document_text.endswith("}\n")


def test_document_header(document: dict[str, Any]) -> None:
    assert document["asyncapi"].startswith("3.")
    assert document["info"]["version"] == str(SCHEMA_VERSION)
    assert document["info"]["title"] == "Marionette bus"
    # A fixed address: the document does not change with the local Redis port.
    assert [server["host"] for server in document["servers"].values()] == ["localhost:6379"]


@pytest.mark.parametrize("topic", ALL_TOPICS, ids=lambda t: t.name)
def test_every_topic_has_a_contract_channel(document: dict[str, Any], topic: Any) -> None:
    channel = document["channels"][f"{topic.name}:contract"]
    assert channel["address"] == topic.name
    assert channel["description"].startswith(topic.description)
    assert ("Partitioned by session" in channel["description"]) == topic.ordered


@pytest.mark.parametrize("topic", ALL_TOPICS, ids=lambda t: t.name)
def test_every_contract_channel_carries_its_model_schema(
    document: dict[str, Any], topic: Any
) -> None:
    channel = document["channels"][f"{topic.name}:contract"]
    (message_ref,) = (m["$ref"] for m in channel["messages"].values())
    payload = resolve(document, message_ref)["payload"]
    assert payload["$ref"] == f"#/components/schemas/{topic.model.__name__}"

    schema = resolve(document, payload["$ref"])
    expected = topic.model.model_json_schema()
    assert set(schema["properties"]) == set(topic.model.model_fields)
    assert sorted(schema["required"]) == sorted(expected["required"])
    assert schema["additionalProperties"] is False
    assert (
        schema["properties"]["session_id"]["pattern"]
        == expected["properties"]["session_id"]["pattern"]
    )


@pytest.mark.parametrize("model", ["AudioFrame", "TtsChunk"])
def test_pcm_is_documented_as_base64_text(document: dict[str, Any], model: str) -> None:
    pcm = document["components"]["schemas"][model]["properties"]["pcm"]
    assert pcm["type"] == "string"
    assert pcm["contentEncoding"] == "base64"


def test_control_schema_lists_every_command(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for command in ("Interrupt", "PersonaChange", "ModuleToggle", "Panic"):
        assert command in schemas
    refs = json.dumps(schemas["Control"]["properties"]["command"])
    for command in ("Interrupt", "PersonaChange", "ModuleToggle", "Panic"):
        assert f"#/components/schemas/{command}" in refs


def test_every_channel_is_a_known_topic(document: dict[str, Any]) -> None:
    names = {topic.name for topic in ALL_TOPICS}
    for key, channel in document["channels"].items():
        assert channel["address"] in names, key


def test_every_operation_points_at_a_channel(document: dict[str, Any]) -> None:
    for name, operation in document["operations"].items():
        assert resolve(document, operation["channel"]["$ref"]) is not None, name
        for message in operation["messages"]:
            assert resolve(document, message["$ref"]) is not None, name
