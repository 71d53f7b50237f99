"""Decoding stream entries as FastStream writes them, and choosing partitions."""

import json
import zlib
from typing import Any

import pytest
from fast_depends.pydantic import PydanticSerializer
from faststream.redis.parser.binary import BinaryMessageFormatV1
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import AsrFinal, AudioFrame, Control, Interrupt, Panic
from contracts.topics import ALL_TOPICS, ASR_FINAL, AUDIO_FRAME, CONTROL
from services.bus.partitions import partition_of, partition_stream, stream_for, streams_of
from services.bus.wire import (
    DATA_FIELD,
    REDRIVEN_FIELD,
    MalformedMessage,
    StreamEntry,
    decode_entry,
)

PLENTY = 10**7
FRAME = AudioFrame(
    session_id="sess-1", seq=5, pcm=bytes(range(256)) * 2 + bytes(128), captured_at=1.0
)


async def encode(message: Any, headers: dict[str, Any] | None = None) -> bytes:
    """The __data__ value of an entry, as a FastStream RedisBroker publishes it."""
    return await BinaryMessageFormatV1.encode(
        message=message,
        reply_to=None,
        headers=headers or {},
        correlation_id="corr-1",
        serializer=PydanticSerializer(),
    )


def entry(data: bytes, **extra: bytes) -> StreamEntry:
    fields = {DATA_FIELD: data, **{k.encode(): v for k, v in extra.items()}}
    return StreamEntry("audio.frame.p3", b"1700000000000-0", fields)


def reason(exc_info: pytest.ExceptionInfo[MalformedMessage]) -> str:
    return str(exc_info.value)


# --- decode_entry: good entries -----------------------------------------------------------


async def test_decodes_a_faststream_entry_into_the_message() -> None:
    decoded = decode_entry(entry(await encode(FRAME)), AUDIO_FRAME, PLENTY)
    assert decoded.envelope == FRAME
    assert isinstance(decoded.envelope, AudioFrame)
    assert decoded.envelope.pcm == FRAME.pcm


async def test_keeps_the_headers() -> None:
    data = await encode(FRAME, headers={"traceparent": "00-abc-def-01"})
    headers = decode_entry(entry(data), AUDIO_FRAME, PLENTY).headers
    assert headers["traceparent"] == "00-abc-def-01"
    assert headers["correlation_id"] == "corr-1"


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        (
            ASR_FINAL,
            AsrFinal(
                session_id="s",
                turn_id="t",
                seq=0,
                text="hi ✨",
                confidence=0.5,
                speech_start_s=0,
                speech_end_s=1,
            ),
        ),
        (CONTROL, Control(session_id="s", seq=1, command=Interrupt(target_turn_id="t"))),
        (CONTROL, Control(session_id="s", seq=2, command=Panic())),
    ],
    ids=["asr.final", "control-interrupt", "control-panic"],
)
async def test_decodes_other_topics(topic: Any, message: Any) -> None:
    assert decode_entry(entry(await encode(message)), topic, PLENTY).envelope == message


async def test_a_body_written_by_another_language_is_decoded() -> None:
    """A producer that writes the JSON itself (not pydantic) is read the same way."""
    body = json.dumps(json.loads(FRAME.model_dump_json()), indent=2).encode()
    assert decode_entry(entry(await encode(body)), AUDIO_FRAME, PLENTY).envelope == FRAME


async def test_entry_exactly_at_the_size_limit_is_accepted() -> None:
    item = entry(await encode(FRAME))
    assert decode_entry(item, AUDIO_FRAME, max_bytes=item.size).envelope == FRAME


async def test_entry_size_and_redriven_mark() -> None:
    data = await encode(FRAME)
    plain = entry(data)
    marked = entry(data, **{REDRIVEN_FIELD.decode(): b"1"})
    assert plain.size == len(DATA_FIELD) + len(data)
    assert not plain.redriven
    assert marked.redriven
    assert decode_entry(marked, AUDIO_FRAME, PLENTY).envelope == FRAME


# --- decode_entry: malformed entries ------------------------------------------------------


def test_entry_without_data_field_is_malformed() -> None:
    item = StreamEntry("audio.frame.p0", b"1-0", {b"text": b"hello", b"seq": b"1"})
    with pytest.raises(MalformedMessage) as exc_info:
        decode_entry(item, AUDIO_FRAME, PLENTY)
    assert "no __data__ field" in reason(exc_info)
    assert "text, seq" in reason(exc_info)


def test_entry_with_no_fields_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match=r"no __data__ field \(fields: none\)"):
        decode_entry(StreamEntry("s", b"1-0", {}), AUDIO_FRAME, PLENTY)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"garbage", b"\x00\xff\xfe\x01", FRAME.model_dump_json().encode()],
    ids=["empty", "text", "binary", "bare-json"],
)
def test_data_without_the_faststream_envelope_is_malformed(garbage: bytes) -> None:
    with pytest.raises(MalformedMessage, match="not a FastStream message"):
        decode_entry(entry(garbage), AUDIO_FRAME, PLENTY)


async def test_truncated_envelope_is_malformed() -> None:
    data = await encode(FRAME)
    # FastStream's parser hands back the raw bytes of a corrupt envelope, so today the reason
    # is the JSON error; a "corrupt FastStream envelope" reason would be as good.
    with pytest.raises(MalformedMessage, match=r"corrupt FastStream envelope|invalid audio\.frame"):
        decode_entry(entry(data[:20]), AUDIO_FRAME, PLENTY)


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2", b"\xff\xfe"])
async def test_envelope_with_invalid_json_body_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedMessage) as exc_info:
        decode_entry(entry(await encode(body)), AUDIO_FRAME, PLENTY)
    assert reason(exc_info).startswith("invalid audio.frame: ")
    assert "JSON" in reason(exc_info)


async def test_unknown_schema_version_is_malformed() -> None:
    body = json.loads(FRAME.model_dump_json())
    body["schema_version"] = 7
    with pytest.raises(MalformedMessage) as exc_info:
        decode_entry(entry(await encode(json.dumps(body).encode())), AUDIO_FRAME, PLENTY)
    # The version is checked before the fields (a v2 body is upgraded first), so the
    # error is the body's, not one field's.
    assert reason(exc_info).startswith("invalid audio.frame: body: unknown schema version 7")
    assert "this build reads versions 2 and 3" in reason(exc_info)
    assert "Value error" not in reason(exc_info)


async def test_message_breaking_the_contract_names_the_field() -> None:
    body = json.loads(FRAME.model_dump_json())
    body["pcm"] = "AAAA"  # 3 bytes: not a 10/20/30 ms frame
    del body["captured_at"]
    with pytest.raises(MalformedMessage) as exc_info:
        decode_entry(entry(await encode(json.dumps(body).encode())), AUDIO_FRAME, PLENTY)
    assert "captured_at: Field required" in reason(exc_info)
    assert "\n" not in reason(exc_info)


async def test_message_of_another_topic_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="invalid control: command: Field required"):
        decode_entry(entry(await encode(FRAME)), CONTROL, PLENTY)


async def test_oversized_entry_is_malformed() -> None:
    item = entry(await encode(FRAME))
    with pytest.raises(MalformedMessage) as exc_info:
        decode_entry(item, AUDIO_FRAME, max_bytes=item.size - 1)
    assert f"entry of {item.size} bytes" in reason(exc_info)
    assert f"MARIONETTE_MAX_MESSAGE_BYTES={item.size - 1}" in reason(exc_info)


def test_size_is_checked_before_anything_else() -> None:
    item = StreamEntry("s", b"1-0", {b"junk": b"x" * 100})
    with pytest.raises(MalformedMessage, match="exceeds MARIONETTE_MAX_MESSAGE_BYTES"):
        decode_entry(item, AUDIO_FRAME, max_bytes=50)


# --- partitions ---------------------------------------------------------------------------

session_ids = st.from_regex(r"[A-Za-z0-9._:\-]{1,64}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(session_id=session_ids, partitions=st.integers(min_value=1, max_value=256))
def test_partition_is_stable_and_in_range(session_id: str, partitions: int) -> None:
    first = partition_of(session_id, partitions)
    assert first == partition_of(session_id, partitions)
    assert 0 <= first < partitions


@settings(max_examples=300, deadline=None)
@given(session_id=session_ids, partitions=st.integers(min_value=1, max_value=256))
def test_partition_is_crc32_of_the_utf8_session_id(session_id: str, partitions: int) -> None:
    """Any language with a CRC-32 (IEEE) can compute the same partition."""
    assert partition_of(session_id, partitions) == zlib.crc32(session_id.encode()) % partitions


def test_partition_matches_known_crc32_values() -> None:
    # CRC-32/IEEE check value: crc32(b"123456789") == 0xCBF43926.
    assert partition_of("123456789", 2**32 - 1) == 0xCBF43926
    assert partition_of("123456789", 8) == 0xCBF43926 % 8


def test_sessions_spread_over_partitions() -> None:
    used = {partition_of(f"session-{n}", 8) for n in range(200)}
    assert used == set(range(8))


@pytest.mark.parametrize("topic", ALL_TOPICS, ids=lambda t: t.name)
def test_stream_for_is_one_of_the_topics_streams(topic: Any) -> None:
    streams = streams_of(topic, 4)
    assert stream_for(topic, "sess-1", 4) in streams
    assert len(streams) == len(set(streams))
    if topic.ordered:
        assert streams == [partition_stream(topic.name, p) for p in range(4)]
        assert stream_for(topic, "sess-1", 4) == f"{topic.name}.{{p{partition_of('sess-1', 4)}}}"
    else:
        assert streams == [topic.name]
