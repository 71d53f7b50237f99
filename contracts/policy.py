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


SCRIPTED_TOKEN_CHARS = 64


def scripted_reply(
    session_id: str, turn_id: str, text: str, expression: str | None = None
) -> list[PolicyToken]:
    """A reply the character says word for word (the panel's or a moderator's "say"), as
    the tokens policy would publish for it: tts, avatar and playback take it like any
    reply. As policy does, the expression travels beside the words, never inside them."""
    expressions = [expression] if expression else []
    pieces = [text[i : i + SCRIPTED_TOKEN_CHARS] for i in range(0, len(text), SCRIPTED_TOKEN_CHARS)]
    tokens = [
        PolicyToken(session_id=session_id, turn_id=turn_id, seq=i, text=piece, index=i,
                    expressions=expressions if i == 0 else [])
        for i, piece in enumerate(pieces)
    ]  # fmt: skip
    end = len(pieces)
    tokens.append(
        PolicyToken(session_id=session_id, turn_id=turn_id, seq=end, text="", index=end,
                    final=True, reply_text=text, status="ok", expressions=expressions)
    )  # fmt: skip
    return tokens
