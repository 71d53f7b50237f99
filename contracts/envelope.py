"""The envelope every message carries: its identity, its conversation, its turn, its order.

Identity is `message_id = "<origin>:<seq>"`. The origin is whatever produces messages in
order (a turn's reply, a capture run, the avatar's blinks) and seq counts within it, like a
producer id and sequence number: a consumer that has handled seq 7 of an origin drops any
later copy of seq <= 7. A stage that handles the same input twice (after a crash) makes the
same ids again, so the copies are dropped downstream.
"""

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.limits import (
    MAX_ID_CHARS,
    MAX_MESSAGE_ID_CHARS,
    PREVIOUS_SCHEMA_VERSION,
    SCHEMA_VERSION,
)

_ID_PATTERN = r"^[A-Za-z0-9._:\-]+$"

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=_ID_PATTERN)
]
"""Session and turn ids: short, printable, safe inside Redis key names."""

MessageId = Annotated[
    str, StringConstraints(min_length=3, max_length=MAX_MESSAGE_ID_CHARS, pattern=_ID_PATTERN)
]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def message_id(origin: str, seq: int) -> str:
    """The id of message number `seq` of `origin`."""
    return f"{origin}:{seq}"


class Envelope(BaseModel):
    """Fields shared by every topic. Trace context travels in headers, not here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(default=SCHEMA_VERSION, description="Contract version.")
    message_id: MessageId = Field(
        default_factory=str,  # filled in from turn_id and seq before validation
        description="'<origin>:<seq>': the same message always has the same id. Defaults to "
        "'<turn_id>:<seq>' ('-:<seq>' without a turn: then one producer run per session).",
    )
    session_id: Identifier = Field(description="One live conversation.")
    turn_id: Identifier | None = Field(
        default=None,
        description="One user utterance or chat message and the reply to it; "
        "None for what belongs to no turn (audio frames, blinks).",
    )
    seq: int = Field(ge=0, description="Position within its origin, from 0.")
    created_at: datetime = Field(default_factory=_utc_now, description="When it was made (UTC).")

    @model_validator(mode="before")
    @classmethod
    def _version_and_identity(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        version = data.get("schema_version", SCHEMA_VERSION)
        if type(version) is not int or version not in (SCHEMA_VERSION, PREVIOUS_SCHEMA_VERSION):
            raise ValueError(
                f"unknown schema version {version!r}: this build reads versions "
                f"{PREVIOUS_SCHEMA_VERSION} and {SCHEMA_VERSION}; upgrade the consumer"
            )
        if version == PREVIOUS_SCHEMA_VERSION:
            data = cls.upgrade_previous(dict(data))
        if "message_id" not in data and isinstance(data.get("seq"), int):
            data = {**data, "message_id": message_id(data.get("turn_id") or "-", data["seq"])}
        return data

    @classmethod
    def upgrade_previous(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A body of the previous schema version as this version reads it (in memory).

        Version 2 had no message_id: its identity was (session, turn, seq)."""
        data["schema_version"] = SCHEMA_VERSION
        if "message_id" not in data and isinstance(data.get("seq"), int):
            data["message_id"] = message_id(data.get("turn_id") or "-", data["seq"])
        return data

    @model_validator(mode="after")
    def _id_ends_with_seq(self) -> "Envelope":
        if not self.message_id.endswith(f":{self.seq}"):
            raise ValueError(
                f"message_id {self.message_id!r} must be '<origin>:{self.seq}' (it ends "
                "with the message's seq)"
            )
        return self

    @property
    def origin(self) -> str:
        """What produced this message in order: the part of message_id before its seq."""
        return self.message_id.rpartition(":")[0]
