"""policy: asr.final and chat.message in; policy.token out, streamed per turn.

A turn: moderate the input, build the prompt (persona, memory summary, recent messages),
stream the LLM's reply token by token with the emotion tags pulled out and unsafe words
replaced, end with a final token that carries the whole reply and its status, then
remember what the character said.

The turn's span is FastStream's (handling asr.final or chat.message); inside it,
`llm.generate` marks the first token. Tokens carry the trace onward without spans of
their own. A memory summary between turns is its own trace, linked to the turn.

An interrupt on `control` stops the turn's generation at the next token (status
"interrupted"); when playback reports how far the reply got, memory keeps only what was
heard, so the next prompt has the reply as the user knows it.
"""

import asyncio
import logging
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from redis.asyncio import Redis

from contracts import (
    AsrFinal,
    ChatMessage,
    Control,
    PersonaChange,
    PlaybackProgress,
    PolicyToken,
)
from contracts.limits import MAX_REPLY_CHARS, MAX_TOKEN_CHARS
from contracts.policy import ReplyStatus
from contracts.topics import ASR_FINAL, CHAT_MESSAGE, CONTROL, PLAYBACK_PROGRESS, POLICY_TOKEN
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.service_slot import ServiceSlot
from services.bus.settings import load_settings
from services.bus.tracing import turn_attributes
from services.policy.backends import (
    BackendFailed,
    ChatBackend,
    Generation,
    Messages,
    complete,
    make_backend,
)
from services.policy.expressions import ExpressionFilter
from services.policy.memory import Memory, MemoryStore
from services.policy.moderation import Moderator, StreamSanitizer
from services.policy.persona import Persona, PersonaError, PersonaStore
from services.policy.settings import PolicySettings
from services.telemetry.metrics import LLM_FIRST_TOKEN

log = logging.getLogger("marionette.policy")
tracer = trace.get_tracer("marionette.policy")

stage = Stage("policy")
tokens_out = stage.publisher(POLICY_TOKEN)

SUMMARY_PROMPT = (
    "Summarize this conversation between a streamer and chat in at most three short "
    "sentences. Keep every name and fact the viewers told."
)


@dataclass(frozen=True)
class Turn:
    session_id: str
    turn_id: str
    text: str
    author: str | None = None  # None: the streamer's own voice

    def as_user_message(self) -> str:
        return self.text if self.author is None else f"{self.author} says: {self.text}"


class ReplyStream:
    """Publishes a reply's tokens in order; the final token closes the turn."""

    def __init__(self, turn: Turn, persona: Persona, moderator: Moderator) -> None:
        self.turn = turn
        self.tags = ExpressionFilter(persona.expressions)
        self.sanitizer = StreamSanitizer(moderator, persona.family_friendly)
        self.index = 0
        self.spoken = ""
        self._pending_tags: list[str] = []

    async def add(self, token: str) -> None:
        piece = self.tags.feed(token)
        await self._publish(self.sanitizer.feed(piece.text), piece.tags)

    async def _publish(self, text: str, tags: list[str]) -> None:
        self._pending_tags += tags
        if not text:
            return
        if not self.spoken:
            text = text.lstrip()
            if not text:
                return
        for start in range(0, len(text), MAX_TOKEN_CHARS):
            chunk = text[start : start + MAX_TOKEN_CHARS]
            await tokens_out.publish(
                PolicyToken(
                    session_id=self.turn.session_id, turn_id=self.turn.turn_id,
                    seq=self.index, index=self.index, text=chunk,
                    expressions=self._pending_tags[:16],
                )
            )  # fmt: skip
            self._pending_tags = []
            self.index += 1
            self.spoken += chunk

    async def finish(self, status: ReplyStatus) -> str:
        piece = self.tags.flush()
        await self._publish(self.sanitizer.feed(piece.text) + self.sanitizer.flush(), piece.tags)
        reply = self.spoken.strip()[:MAX_REPLY_CHARS]
        await tokens_out.publish(
            PolicyToken(
                session_id=self.turn.session_id, turn_id=self.turn.turn_id,
                seq=self.index, index=self.index, text="", final=True,
                reply_text=reply, status=status, expressions=self.tags.tags[:16],
            )
        )  # fmt: skip
        return reply


WARM_UP = Generation(temperature=0.0, max_tokens=1, seed=0)


class PolicyService:
    def __init__(self, settings: PolicySettings, backend: ChatBackend, client: Redis) -> None:
        self.settings = settings
        self.backend = backend
        self.personas = PersonaStore(client, settings.persona_file, settings.personas_dir)
        self.memories = MemoryStore(client, settings.memory_window_s)
        self.moderator = Moderator(settings.rules_dir)
        self._session_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._folds: dict[str, asyncio.Task[None]] = {}  # per session: a summary in progress

    def generation(self, turn: Turn) -> Generation:
        seed = self.settings.seed
        if seed is None:
            seed = zlib.crc32(f"{turn.session_id}:{turn.turn_id}".encode()) & 0x7FFFFFFF
        return Generation(self.settings.temperature, self.settings.max_tokens, seed)

    def prompt(self, persona: Persona, memory: Memory, turn: Turn | None) -> Messages:
        """The request for a turn; without one, the prefix the session's next turn shares."""
        system = persona.system_prompt()
        messages: Messages = [{"role": "system", "content": system}, *persona.few_shot()]
        if memory.summary:
            messages.append(
                {"role": "system", "content": f"Earlier in this stream: {memory.summary}"}
            )
        # Folds can be cancelled by new turns, so the recent messages are capped here too.
        messages += memory.as_prompt()[-self.settings.memory_messages :]
        if turn is not None:
            messages.append({"role": "user", "content": turn.as_user_message()})
        return messages

    async def answer(self, turn: Turn) -> str:
        # A summary between turns must not delay a viewer who is waiting: it gives way.
        fold = self._folds.pop(turn.session_id, None)
        if fold is not None:
            fold.cancel()
        # Turns of one session, from speech and chat alike, are answered one after another.
        async with self._session_locks[turn.session_id]:
            persona = await self.personas.current()  # the turn keeps this persona
            memory = await self.memories.load(turn.session_id)
            reply = ReplyStream(turn, persona, self.moderator)
            verdict = self.moderator.check_input(turn.text, persona.family_friendly)
            if not verdict.allowed:
                log.warning("%s/%s: %s", turn.session_id, turn.turn_id, verdict.reason)
                await reply.add(persona.safe_reply)
                said = await reply.finish("blocked")
            else:
                status = await self._generate(reply, self.prompt(persona, memory, turn), turn)
                said = await reply.finish(status)
            memory.add("user", turn.as_user_message())
            memory.add("assistant", said, turn.turn_id)
            await self.memories.save(turn.session_id, memory)
            if self._fold_due(memory):
                self._fold_later(turn.session_id)
            return said

    async def settled(self) -> None:
        """Wait for the summaries in progress (tests; a clean stop)."""
        await asyncio.gather(*self._folds.values(), return_exceptions=True)

    def _fold_due(self, memory: Memory) -> bool:
        keep = self.settings.memory_messages // 2
        return memory.since_summary >= self.settings.summary_every and len(memory.messages) > keep

    def _fold_later(self, session_id: str) -> None:
        """Summarize once this turn is over; the session's next turn cancels it (and a
        later turn tries again), so the summary only ever uses idle time."""

        turn_span = trace.get_current_span().get_span_context()

        async def fold() -> None:
            with tracer.start_as_current_span(
                "policy.summarize", context=Context(), links=[trace.Link(turn_span)]
            ):
                await summarize()

        async def summarize() -> None:
            async with self._session_locks[session_id]:
                memory = await self.memories.load(session_id)
                if self._fold_due(memory):
                    await self._fold(memory)
                    await self.memories.save(session_id, memory)
                    # The summary's own request displaced the session's prompt in the
                    # model's cache: evaluate the next turn's prefix now, while idle.
                    persona = await self.personas.current()
                    await complete(self.backend, self.prompt(persona, memory, None), WARM_UP)

        def done(task: "asyncio.Task[None]") -> None:
            if self._folds.get(session_id) is task:
                del self._folds[session_id]
            if not task.cancelled() and task.exception() is not None:
                log.error("summarizing %s failed: %r", session_id, task.exception())

        task = asyncio.create_task(fold(), name=f"fold-{session_id}")
        task.add_done_callback(done)
        self._folds[session_id] = task

    async def _generate(self, reply: ReplyStream, messages: Messages, turn: Turn) -> ReplyStatus:
        with tracer.start_as_current_span(
            "llm.generate",
            attributes={
                **turn_attributes(turn.session_id, turn.turn_id),
                "marionette.backend": self.backend.name,
            },
        ) as span:
            status = await self._stream_reply(reply, messages, turn, span)
            span.set_attribute("marionette.status", status)
            span.set_attribute("marionette.tokens", reply.index)
            return status

    async def _stream_reply(
        self, reply: ReplyStream, messages: Messages, turn: Turn, span: trace.Span
    ) -> ReplyStatus:
        options = self.generation(turn)
        for attempt in range(self.settings.retries + 1):
            try:
                asked = time.monotonic()
                async for token in self.backend.stream(messages, options):
                    if asked:
                        span.add_event("first_token")
                        LLM_FIRST_TOKEN.labels(self.backend.name).observe(time.monotonic() - asked)
                        asked = 0.0
                    if stage.interrupted.covers_turn(turn.session_id, turn.turn_id):
                        return "interrupted"  # leaving the loop stops the backend
                    await reply.add(token)
                return "ok"
            except BackendFailed as exc:
                if reply.index > 0 or attempt == self.settings.retries:
                    # Tokens already went out (or no tries left): end the turn as failed.
                    log.error("%s/%s: backend failed: %s", turn.session_id, turn.turn_id, exc)
                    return "error"
                delay_s = self.settings.retry_backoff_ms / 1000 * 2**attempt
                log.warning("backend failed (%s); retrying in %.1f s", exc, delay_s)
                await asyncio.sleep(delay_s)
        return "error"

    async def _fold(self, memory: Memory) -> None:
        """Every N messages, fold all but the most recent into the running summary."""
        keep = self.settings.memory_messages // 2
        older, memory.messages = memory.messages[:-keep], memory.messages[-keep:]
        transcript = "\n".join(f"{m.role}: {m.content}" for m in older)
        request: Messages = [
            {"role": "system", "content": SUMMARY_PROMPT},
            {"role": "user", "content": f"Summary so far: {memory.summary}\n\n{transcript}"},
        ]
        options = Generation(0.0, 120, 0)
        try:
            memory.summary = (await complete(self.backend, request, options)).strip()[:2000]
        except BackendFailed as exc:
            log.warning("could not summarize memory (%s); keeping the old summary", exc)
        memory.since_summary = 0

    async def remember_heard(self, progress: PlaybackProgress) -> None:
        """An interrupted reply: memory keeps what was played of it, marked as cut off."""
        session, turn = progress.session_id, progress.turn_id or ""
        async with self._session_locks[session]:
            memory = await self.memories.load(session)
            if memory.cut_short(turn, progress.heard_text or ""):
                await self.memories.save(session, memory)
            else:
                log.warning("%s/%s: interrupted, but that reply is not in memory", session, turn)

    async def control(self, message: Control) -> None:
        if isinstance(message.command, PersonaChange):
            try:
                persona = await self.personas.apply(message.command)
            except PersonaError as exc:
                log.error("persona change refused: %s", exc)
                return
            log.info("persona is now %s (%s)", persona.name, persona.style)


async def start_service(bus: BusSettings, settings: PolicySettings | None = None) -> PolicyService:
    """Check the backend answers and make the service the handlers use."""
    settings = settings or load_settings(PolicySettings)
    backend = make_backend(settings)
    await backend.check()
    started = PolicyService(settings, backend, Redis.from_url(bus.redis_url or ""))
    service.put(started)
    return started


async def build_service() -> PolicyService:
    return await start_service(load_settings(BusSettings))


service = ServiceSlot(build_service)


@stage.consumer(ASR_FINAL)
async def on_speech(final: AsrFinal) -> None:
    await (await service.get()).answer(Turn(final.session_id, final.turn_id or "t", final.text))


@stage.consumer(CHAT_MESSAGE)
async def on_chat(chat: ChatMessage) -> None:
    turn = Turn(chat.session_id, chat.turn_id or f"c{chat.seq}", chat.text, chat.author)
    await (await service.get()).answer(turn)


@stage.consumer(CONTROL)
async def on_control(message: Control) -> None:
    stage.interrupted.note(message)  # the turn's generation sees it at its next token
    await (await service.get()).control(message)


@stage.consumer(PLAYBACK_PROGRESS)
async def on_progress(progress: PlaybackProgress) -> None:
    if progress.state == "flushed":
        await (await service.get()).remember_heard(progress)


async def main(bus: BusSettings, stop: asyncio.Event) -> None:
    """`marionette run policy`: check the backend answers, then consume."""
    await start_service(bus)
    await StageRuntime(stage, bus).run(stop)
