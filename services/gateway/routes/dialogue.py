"""POST /api/dialogue/stream: an NPC answers a player, sentence by sentence, over SSE.

    curl -N -X POST http://127.0.0.1:8765/api/dialogue/stream \\
         -H 'Content-Type: application/json' \\
         -d '{"npc": "grumpy", "player": "alice", "text": "Hello wizard!"}'

The NPC is a persona file in policy's personas_dir; `<npc>:<player>` is the session, so
each NPC remembers each player on its own. The request goes out as one chat.message that
names the persona (policy answers as that file, not as the live character); the answer
follows the session's topics from before it was published, so nothing is missed:

- without audio, the reply's policy.token stream, cut into sentences with the splitter tts
  uses (a sentence is sent as soon as it is complete, while the LLM writes the next one);
- with audio, the session's tts.chunk stream: each chunk is a sentence with its speech.

Events (each `data:` is one line of JSON):

    event: sentence   {"index", "text", "latency_ms", "audio"?: base64 WAV}
    event: final      {"turn_id", "session", "text", "status", "expressions", "sentences",
                       "first_sentence_ms", "total_ms"}
    event: error      {"error", "code", "turn_id", "session"}

Times are milliseconds since the request came. A stream ends after `final` or `error`.
A client that goes away, or a reply not finished within dialogue_timeout_s, interrupts
the turn, so the LLM stops writing for nobody.
"""

import asyncio
import base64
import contextlib
import io
import time
import wave
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message

from contracts import ChatMessage, Interrupt, PolicyToken, TtsChunk
from contracts.limits import AUDIO_SAMPLE_WIDTH, MAX_CHAT_CHARS
from contracts.topics import POLICY_TOKEN, TTS_CHUNK, Topic
from services.bus.ownership import lease_key
from services.bus.partitions import partition_of
from services.bus.switches import read_switches
from services.gateway.link import BusLink, new_id
from services.gateway.routes.control import control, link_of
from services.gateway.routes.memory import FieldError
from services.gateway.security import Access, requires
from services.policy.expressions import ExpressionFilter
from services.policy.persona import PersonaError, load_persona_file
from services.settings import load_settings
from services.tts.settings import TtsSettings
from services.tts.splitter import SentenceSplitter

router = APIRouter(prefix="/api/dialogue", tags=["dialogue"])
Operator = Annotated[str, Depends(requires(Access.OPERATE))]
# The session `<npc>:<player>` must be an Identifier (at most 64 characters); a player id
# has no ':' so the session splits back unambiguously.
NpcName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
PlayerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,31}$")]
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_CHAT_CHARS, strip_whitespace=True)
]
ErrorCode = Literal["timeout", "policy_not_running", "policy_off", "tts_not_running", "tts_off"]
_STAGE_CODES: dict[str, tuple[ErrorCode, ErrorCode]] = {
    "policy": ("policy_not_running", "policy_off"),
    "tts": ("tts_not_running", "tts_off"),
}


class DialogueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    npc: NpcName = Field(description="A persona file in policy's personas_dir, without .toml.")
    player: PlayerId = Field(description="Who talks; the NPC remembers each player apart.")
    text: Text = Field(description="What the player says.")
    audio: bool = Field(
        default=False, description="Send each sentence's speech too (needs tts running)."
    )


class SentenceEvent(BaseModel):
    index: int = Field(description="Sentences of this reply, from 0.")
    text: str
    latency_ms: int = Field(description="From the request to this sentence.")
    audio: str | None = Field(default=None, description="With audio: base64 WAV (s16le mono).")


class FinalEvent(BaseModel):
    turn_id: str
    session: str
    text: str = Field(description="The whole reply.")
    status: str = Field(description="ok, error, interrupted or blocked (policy's).")
    expressions: list[str]
    sentences: int
    first_sentence_ms: int | None
    total_ms: int


class ErrorEvent(BaseModel):
    error: str
    code: ErrorCode
    turn_id: str
    session: str


class EventStream(EventSourceResponse):
    """sse-starlette's response, with its media type on the class so the OpenAPI document
    shows text/event-stream."""

    media_type = "text/event-stream"


def _event_docs() -> dict[str, Any]:
    events: dict[str, type[BaseModel]] = {
        "sentence": SentenceEvent, "final": FinalEvent, "error": ErrorEvent,
    }  # fmt: skip
    return {name: model.model_json_schema() for name, model in events.items()}


STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: `sentence` as each is ready, then `final` or "
        "`error`. The turn and session are in the X-Marionette-Turn and "
        "X-Marionette-Session headers.",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string", "x-events": _event_docs()},
                "example": 'event: sentence\r\ndata: {"index": 0, "text": "Hmph.", '
                '"latency_ms": 412}\r\n\r\n',
            }
        },
    },
    404: {"description": "No such NPC (the error names the personas there are)."},
    429: {"description": "Too many dialogue requests; see Retry-After."},
}


@router.post("/stream", response_class=EventStream, responses=STREAM_RESPONSES)
async def dialogue_stream(body: DialogueRequest, request: Request, who: Operator) -> EventStream:
    """An NPC's answer to a player, streamed as server-sent events: `sentence` (index,
    text, latency_ms, and with audio a base64 WAV) as each is ready, then `final` (the
    whole reply, its status, first_sentence_ms, total_ms) or `error` (error, code)."""
    began = time.monotonic()
    link = link_of(request)
    link.dialogue_limit.check(who, "dialogue")
    check_npc(link, body.npc)
    session = f"{body.npc}:{body.player}"
    dialogue = Dialogue(link, session, new_id("npc"), body.audio, began)
    topics: list[Topic[Any]] = [POLICY_TOKEN, TTS_CHUNK] if body.audio else [POLICY_TOKEN]
    # Taken before the chat goes out, so the first tokens cannot slip past.
    starts = await link.tail.starts(list(link.tail.streams(topics, session)), None)
    refused = await why_unanswered(link, session, body.audio)
    if refused is None:
        message = ChatMessage(
            session_id=session, turn_id=dialogue.turn, seq=0, platform="gateway",
            author=body.player, text=body.text, persona=body.npc,
        )  # fmt: skip
        await link.publish(message)
    return EventStream(
        dialogue.events(topics, starts, refused),
        headers={"X-Marionette-Turn": dialogue.turn, "X-Marionette-Session": session},
        client_close_handler_callable=dialogue.client_gone,
    )


def check_npc(link: BusLink, npc: str) -> None:
    """404 naming the NPCs there are, or 422 for a persona file policy could not read."""
    files = link.personas
    try:
        load_persona_file(files.path(npc))
    except LookupError as exc:
        raise FieldError(404, "body.npc", str(exc)) from None
    except PersonaError as exc:
        raise FieldError(422, "body.npc", str(exc)) from None


async def why_unanswered(link: BusLink, session: str, audio: bool) -> tuple[ErrorCode, str] | None:
    """Why nothing would answer now (no replica holds the session's partition, or the
    stage is switched off), so the caller hears it at once instead of after the timeout."""
    partition = partition_of(session, link.bus_settings.partitions)
    switches = await read_switches(link.client)
    for stage in ("policy", "tts") if audio else ("policy",):
        not_running, off = _STAGE_CODES[stage]
        if not await link.client.exists(lease_key(stage, partition)):
            return not_running, f"{stage} is not running (nothing would answer)"
        if switches.off(stage):
            return off, f"{stage} is switched off (module toggle or panic)"
    return None


def wav_base64(pcm: bytes, sample_rate: int) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(AUDIO_SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class Dialogue:
    """One NPC reply on its way to the client."""

    link: BusLink
    session: str
    turn: str
    audio: bool
    began: float  # time.monotonic() when the request came
    sentences: int = 0
    first_sentence_ms: int | None = None
    done: bool = False
    _splitter: SentenceSplitter = field(init=False)
    _tags: ExpressionFilter = field(default_factory=lambda: ExpressionFilter([]))

    def __post_init__(self) -> None:
        tts = load_settings(TtsSettings)  # cut as tts cuts, so text and audio match
        self._splitter = SentenceSplitter(
            tts.first_fragment_words, tts.max_unit_chars, tts.first_clause_words
        )

    def ms(self) -> int:
        return round((time.monotonic() - self.began) * 1000)

    async def events(
        self,
        topics: list[Topic[Any]],
        starts: dict[str, str],
        refused: tuple[ErrorCode, str] | None,
    ) -> AsyncIterator[ServerSentEvent]:
        if refused is not None:
            self.done = True
            yield self._error(*refused)
            return
        deadline = self.began + self.link.settings.dialogue_timeout_s
        # The deadline covers reading only, never a yield: a timeout must not fire while
        # the event is being sent.
        async with contextlib.aclosing(self._read(topics, starts)) as reading:
            while not self.done:
                try:
                    async with asyncio.timeout_at(_loop_time(deadline)):
                        event = await anext(reading)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self.done = True
                    await self._interrupt("timeout")  # before the event: the client may go
                    limit = self.link.settings.dialogue_timeout_s
                    yield self._error("timeout", f"no whole reply within {limit:g} s")
                    return
                yield event

    async def _read(
        self, topics: list[Topic[Any]], starts: dict[str, str]
    ) -> AsyncGenerator[ServerSentEvent]:
        """Sentence events, then the final one (done is set before it is handed out)."""
        follow = self.link.tail.follow(topics, session=self.session, starts=starts, block_ms=500)
        ended: PolicyToken | None = None
        spoken = False  # with audio: tts sent the turn's last chunk
        async for seen in follow:
            message = seen.message
            if message.turn_id != self.turn:
                continue
            if isinstance(message, PolicyToken):
                if not self.audio:
                    for text in self._cut(message):
                        yield self._sentence(text)
                ended = message if message.final else ended
            elif isinstance(message, TtsChunk):
                if message.text:
                    yield self._sentence(message.text, wav_base64(message.pcm, message.sample_rate))
                spoken = spoken or message.final
            # An interrupted reply gets no last chunk from tts: do not wait for one.
            if ended is not None and (not self.audio or spoken or ended.status == "interrupted"):
                self.done = True
                yield self._final(ended)
                return

    def _cut(self, token: PolicyToken) -> list[str]:
        # policy takes [emotion] tags out already; this also covers tokens published
        # straight onto policy.token (as /api/say does), which keep theirs.
        units = self._splitter.feed(self._tags.feed(token.text).text)
        if token.final:
            units += self._splitter.feed(self._tags.flush().text) + self._splitter.flush()
        return units

    def _sentence(self, text: str, audio: str | None = None) -> ServerSentEvent:
        latency = self.ms()
        if self.first_sentence_ms is None:
            self.first_sentence_ms = latency
        event = SentenceEvent(index=self.sentences, text=text, latency_ms=latency, audio=audio)
        self.sentences += 1
        return ServerSentEvent(event.model_dump_json(exclude_none=True), event="sentence")

    def _final(self, token: PolicyToken) -> ServerSentEvent:
        event = FinalEvent(
            turn_id=self.turn, session=self.session, text=token.reply_text or "",
            status=token.status or "error", expressions=list(token.expressions),
            sentences=self.sentences, first_sentence_ms=self.first_sentence_ms,
            total_ms=self.ms(),
        )  # fmt: skip
        return ServerSentEvent(event.model_dump_json(), event="final")

    def _error(self, code: ErrorCode, problem: str) -> ServerSentEvent:
        event = ErrorEvent(error=problem, code=code, turn_id=self.turn, session=self.session)
        return ServerSentEvent(event.model_dump_json(), event="error")

    async def client_gone(self, message: Message) -> None:
        """sse-starlette calls this when the client disconnects (outside the cancelled
        stream, so it may still publish)."""
        if not self.done:
            self.done = True
            await self._interrupt("client_gone")

    async def _interrupt(self, reason: str) -> None:
        command = Interrupt(target_turn_id=self.turn, reason=reason)
        await self.link.publish(control(command, self.session))


def _loop_time(monotonic_deadline: float) -> float:
    """asyncio's clock for a time.monotonic() deadline (the same clock on most systems, but
    not promised)."""
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())
