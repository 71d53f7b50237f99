"""The envelope every message carries: which conversation, which turn, where in order."""

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from contracts.limits import MAX_ID_CHARS, SCHEMA_VERSION

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[A-Za-z0-9._:\-]+$"),
]
"""Session and turn ids: short, printable, safe inside Redis key names."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields shared by every topic. Trace context travels in headers, not here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(default=SCHEMA_VERSION, description="Contract version.")
    session_id: Identifier = Field(description="One live conversation.")
    turn_id: Identifier | None = Field(
        default=None,
        description="One user utterance or chat message and the reply to it; "
        "for audio frames, the capture run (turns do not exist yet).",
    )
    seq: int = Field(ge=0, description="Order within this stream for this session and turn.")
    created_at: datetime = Field(default_factory=_utc_now, description="When it was made (UTC).")

    @field_validator("schema_version", mode="before")
    @classmethod
    def _known_version(cls, value: Any) -> Any:
        if type(value) is not int or value != SCHEMA_VERSION:
            raise ValueError(
                f"unknown schema version {value!r}: this build reads version {SCHEMA_VERSION}; "
                "upgrade the consumer or migrate the producer"
            )
        return value

    @property
    def dedup_key(self) -> str:
        """Identity of a message: a redelivery or a re-publish has the same key."""
        return f"{self.session_id}|{self.turn_id or ''}|{self.seq}"
