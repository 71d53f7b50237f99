"""policy.token: policy -> tts, captions."""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from contracts.envelope import Envelope
from contracts.limits import MAX_EXPRESSIONS, MAX_REPLY_CHARS, MAX_TAG_CHARS, MAX_TOKEN_CHARS

ExpressionTag = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TAG_CHARS, pattern=r"^[a-z_]+$")
]
ReplyStatus = Literal["ok", "error", "interrupted", "blocked"]


class PolicyToken(Envelope):
    """One streamed token of a reply. The final token carries the whole reply and its status."""

    text: Annotated[str, StringConstraints(max_length=MAX_TOKEN_CHARS)]
    index: int = Field(ge=0, description="Position of this token in the reply.")
    final: bool = False
    expressions: list[ExpressionTag] = Field(default_factory=list, max_length=MAX_EXPRESSIONS)
    reply_text: Annotated[str, StringConstraints(max_length=MAX_REPLY_CHARS)] | None = None
    status: ReplyStatus | None = None

    @model_validator(mode="after")
    def _final_carries_reply(self) -> "PolicyToken":
        if self.final and (self.reply_text is None or self.status is None):
            raise ValueError("the final token must carry reply_text and status")
        if not self.final and self.status is not None:
            raise ValueError("only the final token carries a status")
        return self
