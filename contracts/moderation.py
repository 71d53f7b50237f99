"""moderation: what moderation refused, renamed or replaced, and why.

Only what moderation changed is published (an allowed line makes no event), so the panel
and a replay can show why a line was not answered as written or why a reply was replaced.
"""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from contracts.envelope import Envelope, MessageId
from contracts.limits import MAX_REASON_CHARS

ModerationAction = Literal["refused", "renamed", "replaced"]
"""refused: the line is not sent to the LLM (answered with the safe reply, or dropped from
the chat queue); renamed: the author's name was not used; replaced: a reply (or its rest)
was swapped for the safe reply."""


class ModerationVerdict(Envelope):
    """A verdict on one field of one message; turn_id is the turn it belongs to."""

    direction: Literal["input", "output"]
    subject: Literal["text", "author", "reply"] = Field(description="Which field was judged.")
    action: ModerationAction
    reasons: list[Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)]] = Field(
        min_length=1,
        max_length=8,
        description="Rule classes and what was seen: 'injection: ignore previous "
        "instructions (read through: leetspeak, zero-width)'.",
    )
    excerpt: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)] = Field(
        default="", description="The judged text as moderation read it, shortened."
    )
    judged_message_id: MessageId | None = Field(
        default=None, description="The message judged (a chat line, a transcript)."
    )
    judged_by: Annotated[str, StringConstraints(max_length=32)] = Field(
        description="The stage that judged: arbiter or policy."
    )
