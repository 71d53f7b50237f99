"""A reply on its way out: the LLM's text, cleaned, published token by token.

Emotion tags ([happy]) are taken out of the spoken text and carried as expressions, unsafe
words replaced (word-whole, even across tokens); text goes out in tokens of at most
MAX_TOKEN_CHARS. The final token carries the whole reply and its status.

With a TakeoverCheck, text is held until its clause is complete (tts speaks whole clauses
anyway; the reply's first unit as soon as tts's splitter would end it, often earlier, so
the first audio comes sooner) and the reply with it is checked before it goes out: a
reply that shows a takeover raises TakeoverFound, and the caller says the safe reply
instead of the rest.

Where the reply stands (tokens out, their text, the LLM text behind them, what the filters
hold) is a ReplyProgress, checkpointed with each token: a replica that takes the turn over
after a crash publishes what was not out yet and asks the LLM to go on from the same text.
"""

import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

from contracts import PolicyToken
from contracts.limits import MAX_EXPRESSIONS, MAX_REPLY_CHARS, MAX_TOKEN_CHARS
from contracts.policy import ReplyStatus
from services.moderation import Moderator, StreamSanitizer
from services.moderation.takeover import TakeoverCheck
from services.policy.expressions import ExpressionFilter
from services.policy.persona import Persona
from services.tts.splitter import first_unit_end


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
    clause_held: str = ""  # cleaned text held until its clause ends, to be checked whole
    takeover: str | None = None  # why the reply was replaced, once it was
    tool_messages: list[dict[str, Any]] = Field(default_factory=list)  # calls and results
    tool_rounds: int = 0  # rounds of tool calls run
    round_start: int = 0  # where in `generated` the round after the last tools began
    status: ReplyStatus | None = None  # set once the final token is out
    reply: str = ""


CLAUSE_END = re.compile(r"[.!?;:,\n…—]")
MAX_HELD_CHARS = 160  # a clause this long without punctuation goes out anyway


class TakeoverFound(Exception):
    """The reply (with the clause about to go out) shows that an attack worked."""

    def __init__(self, reason: str, clause: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.clause = clause


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
        check: TakeoverCheck | None = None,
    ) -> None:
        """publish(token, progress): send the token with the progress it brings about;
        check: hold each clause and check the reply with it before it goes out."""
        self.session_id = session_id
        self.check = check
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
        """The LLM's next token (TakeoverFound if the reply shows a takeover)."""
        self.progress.generated += token
        piece = self.tags.feed(token)
        await self._release(self.sanitizer.feed(piece.text), piece.tags)

    async def say(self, text: str) -> None:
        """Text the character says as it is (the safe reply, a chat line read aloud):
        cleaned like the LLM's, but not held or checked."""
        first = self.tags.feed(text)
        rest = self.tags.flush()
        words = (self.sanitizer.feed(first.text + rest.text) + self.sanitizer.flush()).strip()
        if self.progress.spoken and not self.progress.spoken[-1].isspace():
            words = " " + words
        await self._send(words, first.tags + rest.tags)

    async def settle(self) -> None:
        """Send what is held, checked as at the end of a reply (the model stopped to call a
        tool: its words so far go out before anything said while the tool runs)."""
        piece = self.tags.flush()
        text = self.sanitizer.feed(piece.text) + self.sanitizer.flush()
        await self._release(text, piece.tags, final=True)

    def express(self, tag: str) -> None:
        """Show an expression from the next token on (a tool chose it)."""
        self.progress.pending_tags.append(tag)
        self.tags.tags.append(tag)

    async def replace(self, reason: str, safe_reply: str) -> None:
        """Drop what is held and say the safe reply instead of the rest."""
        self.progress.takeover = reason
        self.progress.clause_held = ""
        self.tags.held, self.sanitizer.held = "", ""
        await self.say(safe_reply)

    async def finish(self, status: ReplyStatus) -> str:
        """The final token (TakeoverFound if the last clause shows a takeover)."""
        if status != "interrupted":  # an interrupted reply ends where it was cut, not later
            piece = self.tags.flush()
            text = self.sanitizer.feed(piece.text) + self.sanitizer.flush()
            await self._release(text, piece.tags, final=True)
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

    async def _release(self, text: str, tags: list[str], final: bool = False) -> None:
        """Send text up to the end of its last complete clause, once the reply with it
        passes the check; hold the rest (all of it at the end of the reply)."""
        if self.check is None:
            await self._send(text, tags)
            return
        progress = self.progress
        held = progress.clause_held + text
        cut = len(held)
        if not final:
            ends = [m.end() for m in CLAUSE_END.finditer(held)]
            cut = ends[-1] if ends else (len(held) if len(held) >= MAX_HELD_CHARS else 0)
            if not progress.spoken.strip():
                cut = max(cut, first_unit_end(held) or 0)
        ready, progress.clause_held = held[:cut], held[cut:]
        if ready.strip():
            reason = self.check.check(progress.spoken + ready)
            if reason is not None:
                raise TakeoverFound(reason, ready)
        await self._send(ready, tags)

    async def _send(self, text: str, tags: list[str]) -> None:
        progress = self.progress
        progress.pending_tags += tags
        if not progress.spoken or progress.spoken[-1].isspace():
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
