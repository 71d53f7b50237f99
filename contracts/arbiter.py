"""arbiter.decision: what the arbiter did with each audience line, and why.

Every line of chat.incoming gets at least one decision: "queued" when it arrives, then
"chosen" (published on chat.message to be answered), "merged" (a duplicate, counted on the
line that was chosen instead) or "dropped" (stale, rate-limited, spam, refused by
moderation), each with a reason a person can read. The panel shows the queue from these
(each decision carries the queue as it stands after it), and a replay shows the same.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.chat import Badge, Platform
from contracts.envelope import Envelope, Identifier, MessageId
from contracts.limits import (
    MAX_AUTHOR_CHARS,
    MAX_BADGES,
    MAX_CHAT_CHARS,
    MAX_QUEUE_SHOWN,
    MAX_REASON_CHARS,
)

Reason = Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)]
ArbiterAction = Literal["queued", "chosen", "merged", "dropped"]


class QueuedLine(BaseModel):
    """A chat line as the arbiter sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: MessageId = Field(description="The line's chat.incoming message id.")
    turn_id: Identifier = Field(description="The turn it becomes when chosen.")
    platform: Platform
    author: Annotated[str, StringConstraints(max_length=MAX_AUTHOR_CHARS)]
    text: Annotated[str, StringConstraints(max_length=MAX_CHAT_CHARS)]
    badges: list[Badge] = Field(default_factory=list, max_length=MAX_BADGES)
    score: float = Field(description="Higher is answered sooner (see the arbiter's settings).")
    waited_ms: int = Field(ge=0, description="Since it arrived, when the decision was made.")
    merged: int = Field(default=0, ge=0, description="Duplicates merged into it.")


class ArbiterDecision(Envelope):
    """One decision about one line; turn_id is the line's."""

    action: ArbiterAction
    line: QueuedLine
    reason: Reason = Field(description="Why, in words: 'question, moderator', 'stale: ...'.")
    queue: list[QueuedLine] = Field(
        default_factory=list,
        max_length=MAX_QUEUE_SHOWN,
        description="The queue after this decision, best first (the first few).",
    )
    queue_length: int = Field(default=0, ge=0, description="Lines waiting, all of them.")
