"""The recording file: exact records, compact PCM, cut-short files, schema versions."""

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from faststream.redis.parser.binary import BinaryMessageFormatV1

from contracts import AudioFrame, ChatMessage
from contracts.limits import SCHEMA_VERSION
from services.bus.wire import DATA_FIELD, REDRIVEN_FIELD
from services.replay import recording as rec
from services.replay.recording import (
    Record,
    Recording,
    RecordingError,
    RecordingHeader,
    RecordingWriter,
    pack_record,
    unpack_record,
)
from services.replay.turns import decoded


async def entry_data(body: bytes, headers: dict[str, str] | None = None) -> bytes:
    return await BinaryMessageFormatV1.encode(
        message=body, reply_to=None, headers=headers or {"traceparent": "00-abc-def-01"},
        correlation_id="c0",
    )  # fmt: skip


async def frame_record(seq: int = 0, pcm: bytes = bytes(range(256)) * 2 + bytes(128)) -> Record:
    frame = AudioFrame(session_id="mic", turn_id="c1", seq=seq, pcm=pcm, captured_at=1.5)
    data = await entry_data(frame.model_dump_json().encode())
    return Record("audio.frame.p1", f"1700000000000-{seq}", {DATA_FIELD: data})


async def test_a_frame_is_stored_with_raw_pcm_and_comes_back_byte_for_byte() -> None:
    record = await frame_record()
    packed = pack_record(record)
    assert packed["p"] == bytes(range(256)) * 2 + bytes(128)
    assert b'"pcm":""' in packed["b"], "the base64 text is lifted out of the body"
    assert unpack_record(msgpack.unpackb(msgpack.packb(packed, use_bin_type=True))) == record


async def test_entries_that_are_not_plain_messages_are_kept_whole() -> None:
    odd_base64 = b'{"pcm":"AAE="}'.replace(b"AAE=", b"AAF=")  # decodes, but not canonical
    records = [
        Record("chat.message.p0", "1-0", {b"junk": b"\x00\xff"}),
        Record("chat.message.p0", "1-1", {DATA_FIELD: b"not FastStream"}),
        Record("audio.frame.p0", "1-2", {DATA_FIELD: await entry_data(odd_base64)}),
        Record(
            "chat.message.p0", "1-3", {DATA_FIELD: await entry_data(b"{}"), REDRIVEN_FIELD: b"1"}
        ),
    ]
    for record in records:
        assert (
            unpack_record(msgpack.unpackb(msgpack.packb(pack_record(record)), strict_map_key=False))
            == record
        )


async def test_a_recording_reads_back_its_header_and_records_in_order(tmp_path: Path) -> None:
    path = tmp_path / "r.mrec"
    header = RecordingHeader(topics=("audio.frame",), partitions=4, started_at=12.5)
    writer = RecordingWriter(path, header)
    records = [await frame_record(seq) for seq in range(50)]
    for record in records:
        writer.write(record)
    writer.close()
    recording = Recording(path)
    assert recording.header == header
    assert list(recording.records()) == records
    assert not recording.truncated


async def test_a_recording_cut_short_gives_what_it_holds_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "r.mrec"
    writer = RecordingWriter(path, RecordingHeader(topics=("audio.frame",), partitions=4))
    records = [await frame_record(seq) for seq in range(200)]
    for record in records:
        writer.write(record)
    writer.flush()
    whole = path.read_bytes()  # flushed, not closed: as a killed recorder leaves it
    writer.close()
    path.write_bytes(whole[: len(whole) * 3 // 4])
    recording = Recording(path)
    kept = list(recording.records())
    assert recording.truncated
    assert 0 < len(kept) < len(records)
    assert kept == records[: len(kept)]


def write_raw(path: Path, header: dict[str, Any], *packed: dict[str, Any]) -> None:
    with gzip.open(path, "wb") as file:
        for item in (header, *packed):
            file.write(msgpack.packb(item, use_bin_type=True))


def header(**changes: object) -> dict[str, Any]:
    return {**RecordingHeader(topics=("chat.message",), partitions=1).packed(), **changes}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"RIFF....WAVEfmt ", "not a Marionette recording"),
        (gzip.compress(msgpack.packb({"hello": 1})), "not a Marionette recording"),
        (gzip.compress(msgpack.packb(header(format_version=99))), "newer than this build"),
        (
            gzip.compress(msgpack.packb(header(schema_version=SCHEMA_VERSION + 1))),
            "upgrade Marionette",
        ),
        (
            gzip.compress(msgpack.packb(header(schema_version=0))),
            "no migration from version",
        ),
    ],
)
def test_a_file_this_build_cannot_read_is_refused_with_the_reason(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "x.mrec"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match=expected):
        Recording(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"cannot read .*nowhere\.mrec"):
        Recording(tmp_path / "nowhere.mrec")


async def test_an_older_recording_is_migrated_when_a_migration_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = SCHEMA_VERSION - 1
    body = {
        "schema_version": old, "session_id": "s1", "turn_id": "t1", "seq": 0,
        "created_at": "2026-01-01T00:00:00Z", "platform": "twitch", "user": "viewer", "text": "hi",
    }  # fmt: skip

    def rename_user(topic: str, message: dict[str, Any]) -> dict[str, Any]:
        if topic == "chat.message":
            message["author"] = message.pop("user")
        return message

    data = await entry_data(json.dumps(body).encode())
    path = tmp_path / "old.mrec"
    write_raw(
        path,
        header(schema_version=old),
        pack_record(Record("chat.message.p0", "5-0", {DATA_FIELD: data})),
    )
    monkeypatch.setitem(rec.MIGRATIONS, old, rename_user)
    [record] = Recording(path).records()
    message = decoded(record)
    assert isinstance(message, ChatMessage)
    assert (message.schema_version, message.author, message.text) == (
        SCHEMA_VERSION,
        "viewer",
        "hi",
    )


async def test_without_its_migration_an_old_body_would_not_pass_the_contracts() -> None:
    body = (
        b'{"schema_version":0,"session_id":"s1","seq":0,"platform":"twitch","user":"v","text":"x"}'
    )
    record = Record("chat.message.p0", "5-0", {DATA_FIELD: await entry_data(body)})
    assert decoded(record) is None


def test_pcm_lifting_refuses_what_it_could_not_put_back() -> None:
    assert rec.lift_pcm(b'{"pcm":"AAAA","x":{"pcm":"AAAA"}}') is None  # twice
    assert rec.lift_pcm(b'{"pcm":"not base64!"}') is None
    body, pcm, at = rec.lift_pcm(b'{"a":1,"pcm":"AAECAw==","b":2}') or (b"", b"", 0)
    assert pcm == bytes([0, 1, 2, 3])
    assert body[:at] + base64.b64encode(pcm) + body[at:] == b'{"a":1,"pcm":"AAECAw==","b":2}'


async def test_a_version_2_recording_of_frames_reads_as_version_3(tmp_path: Path) -> None:
    """Frames carried their capture run as turn_id in version 2; it is their origin now."""
    pcm = base64.b64encode(bytes(640)).decode()
    body = {
        "schema_version": 2, "session_id": "mic", "turn_id": "c17", "seq": 4,
        "created_at": "2026-01-01T00:00:00Z", "pcm": pcm, "captured_at": 1.5,
    }  # fmt: skip
    data = await entry_data(json.dumps(body).encode())
    path = tmp_path / "v2.mrec"
    write_raw(
        path,
        header(schema_version=2),
        pack_record(Record("audio.frame.p1", "5-0", {DATA_FIELD: data})),
    )
    [record] = Recording(path).records()
    frame = decoded(record)
    assert isinstance(frame, AudioFrame)
    assert (frame.schema_version, frame.message_id, frame.origin, frame.turn_id) == (
        SCHEMA_VERSION, "c17:4", "c17", None,
    )  # fmt: skip
