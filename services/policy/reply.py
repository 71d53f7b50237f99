"""A reply on its way out: the LLM's text, cleaned, published token by token.

Emotion tags ([happy]) are taken out of the spoken text and carried as expressions, unsafe
words replaced (word-whole, even across tokens); text goes out in tokens of at most
MAX_TOKEN_CHARS. The final token carries the whole reply and its status.

Where the reply stands (tokens out, their text, the LLM text behind them, what the filters
hold) is a ReplyProgress, checkpointed with each token: a replica that takes the turn over
after a crash publishes what was not out yet and asks the LLM to go on from the same text.
"""

from collections.abc import Awaitable, Callable

from pydantic import BaseModel, Field

from contracts import PolicyToken
from contracts.limits import MAX_EXPRESSIONS, MAX_REPLY_CHARS, MAX_TOKEN_CHARS
from contracts.policy import ReplyStatus
from services.policy.expressions import ExpressionFilter
from services.policy.moderation import Moderator, StreamSanitizer
from services.policy.persona import Persona


class ReplyProgress(BaseModel):
    """A turn's reply as far as it was published (policy's checkpointed state)."""

    index: int = 0  # tokens published
    spoken: str = ""  # their text
    generated: str = ""  # the LLM's text behind them (and behind what the filters hold)
    unsent: str = ""  # cleaned text not yet published (a token was cut in pieces)
    tag_held: str = ""
    tags: list[str] = Field(default_factory=list)
    word_held: str = ""
    pending_tags: list[str] = Field(default_factory=list)
    status: ReplyStatus | None = None  # set once the final token is out
    reply: str = ""


class ReplyStream:
    """Publishes a reply's tokens in order; the final token closes the turn."""

    def __init__(
        self,
        session_id: str,
        turn_id: str,
        persona: Persona,
        moderator: Moderator,
        progress: ReplyProgress,
        publish: Callable[[PolicyToken, ReplyProgress], Awaitable[None]],
    ) -> None:
        """publish(token, progress): send the token with the progress it brings about."""
        self.session_id = session_id
        self.turn_id = turn_id
        self.progress = progress
        self._publish_token = publish
        self.tags = ExpressionFilter(persona.expressions)
        self.tags.held, self.tags.tags = progress.tag_held, list(progress.tags)
        self.sanitizer = StreamSanitizer(moderator, persona.family_friendly)
        self.sanitizer.held = progress.word_held

    @property
    def index(self) -> int:
        return self.progress.index

    async def resume(self) -> None:
        """Publish what a crash left unsent."""
        unsent, self.progress.unsent = self.progress.unsent, ""
        await self._send(unsent, [])

    async def add(self, token: str) -> None:
        self.progress.generated += token
        piece = self.tags.feed(token)
        await self._send(self.sanitizer.feed(piece.text), piece.tags)

    async def finish(self, status: ReplyStatus) -> str:
        if status != "interrupted":  # an interrupted reply ends where it was cut, not later
            piece = self.tags.flush()
            await self._send(self.sanitizer.feed(piece.text) + self.sanitizer.flush(), piece.tags)
        progress = self.progress
        progress.reply = progress.spoken.strip()[:MAX_REPLY_CHARS]
        progress.status = status
        await self._publish_token(
            PolicyToken(
                session_id=self.session_id, turn_id=self.turn_id, seq=progress.index,
                index=progress.index, text="", final=True, reply_text=progress.reply,
                status=status, expressions=self.tags.tags[:MAX_EXPRESSIONS],
            ),
            self._snapshot(),
        )  # fmt: skip
        return progress.reply

    async def _send(self, text: str, tags: list[str]) -> None:
        progress = self.progress
        progress.pending_tags += tags
        if not progress.spoken:
            text = text.lstrip()
        while text:
            chunk, text = text[:MAX_TOKEN_CHARS], text[MAX_TOKEN_CHARS:]
            index = progress.index
            progress.index += 1
            progress.spoken += chunk
            progress.unsent = text
            expressions, progress.pending_tags = progress.pending_tags[:MAX_EXPRESSIONS], []
            await self._publish_token(
                PolicyToken(
                    session_id=self.session_id, turn_id=self.turn_id, seq=index,
                    index=index, text=chunk, expressions=expressions,
                ),
                self._snapshot(),
            )  # fmt: skip

    def _snapshot(self) -> ReplyProgress:
        self.progress.tag_held = self.tags.held
        self.progress.tags = list(self.tags.tags)
        self.progress.word_held = self.sanitizer.held
        return self.progress
