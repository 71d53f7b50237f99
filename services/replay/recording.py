"""Recordings: what `marionette record` writes and `marionette replay` reads.

A recording is a gzip stream of msgpack objects: a header, then one record per stream
entry in the order the entries were added. A record keeps the entry exactly as Redis
held it (stream, id, every field), so a replay can put back the same bytes. Two things
keep it compact: FastStream's binary envelope is stored as its header bytes plus the
JSON body, and the base64 PCM inside an audio body is lifted out as raw bytes (a third
smaller before gzip, and it compresses) and put back, identical, when read.

A recording names the contracts' schema version it was made with; reading one of
another version migrates it (MIGRATIONS) or fails with the reason, never misreads it.
"""

import base64
import binascii
import gzip
import json
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import msgpack

from contracts.envelope import Envelope
from contracts.limits import SCHEMA_VERSION
from contracts.topics import Topic, topic_named
from services.bus.partitions import topic_of_stream
from services.bus.wire import (
    DATA_FIELD,
    MalformedMessage,
    entry_order,
    entry_time,
    split_envelope,
)

FORMAT = "marionette-recording"
FORMAT_VERSION = 1
SUFFIX = ".mrec"

_PCM_KEY = b'"pcm":"'

Migration = Callable[[str, dict[str, Any]], dict[str, Any]]


def _unchanged(topic_name: str, body: dict[str, Any]) -> dict[str, Any]:
    return body


def _from_version_2(topic_name: str, body: dict[str, Any]) -> dict[str, Any]:
    # The contracts upgrade a version 2 body themselves (message_id; frames' run as origin).
    return topic_named(topic_name).model.upgrade_previous(body)


MIGRATIONS: dict[int, Migration] = {1: _unchanged, 2: _from_version_2}
"""Body migrations: MIGRATIONS[v](topic name, body of version v) -> body of version v + 1.

1 -> 2 only added a command and optional fields, so a version 1 body reads as version 2.
2 -> 3 is the contracts' own upgrade of the previous version (Envelope.upgrade_previous).

Add one when SCHEMA_VERSION goes up and old recordings can be carried forward; without
one, a recording of the old version is refused with the reason.
"""


class RecordingError(ValueError):
    """A file that cannot be read as a recording this build understands."""


def marionette_version() -> str:
    try:
        return version("marionette")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class RecordingHeader:
    topics: tuple[str, ...]
    partitions: int
    started_at: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION
    format_version: int = FORMAT_VERSION
    made_by: str = field(default_factory=marionette_version)

    def packed(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "schema_version": self.schema_version,
            "topics": list(self.topics),
            "partitions": self.partitions,
            "started_at": self.started_at,
            "made_by": self.made_by,
        }


@dataclass(frozen=True)
class Record:
    """One stream entry as it was in Redis."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]

    @property
    def added_at(self) -> float:
        """When Redis added the entry (Unix s), from the milliseconds of its id."""
        return entry_time(self.entry_id)

    @property
    def order(self) -> tuple[int, int]:
        return entry_order(self.entry_id)

    @property
    def topic(self) -> Topic[Envelope] | None:
        return topic_of_stream(self.stream)


def lift_pcm(body: bytes) -> tuple[bytes, bytes, int] | None:
    """(body without the PCM text, the raw PCM, where its text was), when that is exact."""
    key = body.find(_PCM_KEY)
    if key < 0 or body.find(_PCM_KEY, key + 1) >= 0:
        return None
    start = key + len(_PCM_KEY)
    end = body.find(b'"', start)
    if end < 0:
        return None
    text = body[start:end]
    try:
        pcm = base64.b64decode(text, validate=True)
    except binascii.Error:
        return None
    if base64.b64encode(pcm) != text:
        return None  # not the canonical encoding: keep the text as it is
    return body[:start] + body[end:], pcm, start


def pack_record(record: Record) -> dict[str, Any]:
    fields = dict(record.fields)
    packed: dict[str, Any] = {"s": record.stream, "i": record.entry_id}
    data = fields.pop(DATA_FIELD, None)
    if data is not None:
        try:
            body, _ = split_envelope(data)
        except MalformedMessage:
            body = None
        if body is None or not data.endswith(body):
            fields[DATA_FIELD] = data  # not FastStream's format: kept whole, replayed as is
        else:
            packed["e"] = data[: len(data) - len(body)]
            lifted = lift_pcm(body)
            if lifted is None:
                packed["b"] = body
            else:
                packed["b"], packed["p"], packed["o"] = lifted
    if fields:
        packed["f"] = fields
    return packed


def unpack_record(packed: dict[str, Any]) -> Record:
    fields: dict[bytes, bytes] = dict(packed.get("f", {}))
    if "e" in packed:
        body: bytes = packed["b"]
        if "p" in packed:
            at: int = packed["o"]
            body = body[:at] + base64.b64encode(packed["p"]) + body[at:]
        fields[DATA_FIELD] = packed["e"] + body
    return Record(packed["s"], packed["i"], fields)


class RecordingWriter:
    """Appends records to a new recording file; flushed often, so a killed recorder
    leaves a readable file."""

    def __init__(self, path: Path, header: RecordingHeader) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: gzip.GzipFile = gzip.open(path, "wb", compresslevel=6)  # noqa: SIM115
        self._packer = msgpack.Packer(use_bin_type=True)
        self._file.write(self._packer.pack(header.packed()))
        self.records = 0

    def write(self, record: Record) -> None:
        self._file.write(self._packer.pack(pack_record(record)))
        self.records += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _check_header(path: Path, packed: object) -> RecordingHeader:
    if not isinstance(packed, dict) or packed.get("format") != FORMAT:
        raise RecordingError(f"{path} is not a Marionette recording (no recording header)")
    fmt = packed.get("format_version")
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise RecordingError(
            f"{path} has recording format {fmt!r}, newer than this build reads "
            f"({FORMAT_VERSION}); upgrade Marionette to replay it"
        )
    schema = packed.get("schema_version")
    if not isinstance(schema, int):
        raise RecordingError(f"{path} does not say which contracts schema version it holds")
    if schema > SCHEMA_VERSION:
        raise RecordingError(
            f"{path} was recorded with contracts schema version {schema}, newer than this "
            f"build's {SCHEMA_VERSION}: upgrade Marionette to replay it"
        )
    missing = [v for v in range(schema, SCHEMA_VERSION) if v not in MIGRATIONS]
    if missing:
        raise RecordingError(
            f"{path} was recorded with contracts schema version {schema}; this build reads "
            f"version {SCHEMA_VERSION} and has no migration from version {missing[0]}. "
            f"Replay it with the Marionette that made it ({packed.get('made_by')}), "
            "or record it again"
        )
    return RecordingHeader(
        topics=tuple(packed.get("topics", ())),
        partitions=int(packed.get("partitions", 1)),
        started_at=float(packed.get("started_at", 0.0)),
        schema_version=schema,
        format_version=fmt,
        made_by=str(packed.get("made_by", "unknown")),
    )


def migrate(record: Record, from_version: int) -> Record:
    """The record with its body carried from `from_version` to SCHEMA_VERSION."""
    topic = record.topic
    data = record.fields.get(DATA_FIELD)
    if topic is None or data is None:
        return record
    try:
        body_bytes, _ = split_envelope(data)
        body = json.loads(body_bytes)
    except (MalformedMessage, ValueError):
        return record  # not a message of a topic: replayed as is, as it was recorded
    for v in range(from_version, SCHEMA_VERSION):
        body = MIGRATIONS[v](topic.name, body)
    body["schema_version"] = SCHEMA_VERSION
    new_body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    prefix = data[: len(data) - len(body_bytes)]
    return Record(record.stream, record.entry_id, {**record.fields, DATA_FIELD: prefix + new_body})


READ_BYTES = 64 * 1024


class _Objects:
    """The msgpack objects of a recording, read in pieces so a cut-short file still gives
    every object before the cut (a recorder that was killed leaves such a file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.truncated = False

    def __iter__(self) -> Iterator[Any]:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        try:
            file = gzip.open(self.path, "rb")  # noqa: SIM115 (entered below)
        except OSError as exc:
            raise RecordingError(f"cannot read {self.path}: {exc}") from None
        with file:
            while True:
                try:
                    chunk = file.read(READ_BYTES)
                except (EOFError, zlib.error):
                    self.truncated = True
                    chunk = b""
                if not chunk:
                    break
                unpacker.feed(chunk)
                yield from unpacker
        yield from unpacker


class Recording:
    """A recording file: its header, and its records read lazily, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.truncated = False  # set once reading found the file cut short
        try:
            first = next(iter(_Objects(path)), None)
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            raise RecordingError(f"{path} is not a Marionette recording: {exc}") from None
        self.header = _check_header(path, first)

    def records(self) -> Iterator[Record]:
        """Every record, migrated to this build's schema version when it is older."""
        old = self.header.schema_version if self.header.schema_version != SCHEMA_VERSION else None
        objects = _Objects(self.path)
        packed_records = iter(objects)
        next(packed_records)  # the header
        try:
            for packed in packed_records:
                record = unpack_record(packed)
                yield record if old is None else migrate(record, old)
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordingError(f"{self.path} holds a damaged record: {exc!r}") from None
        finally:
            self.truncated = self.truncated or objects.truncated
