"""policy: asr.final and chat.message in; policy.token out, streamed per turn.

A turn: moderate the input, build the prompt (persona, memory summary, recent messages),
stream the LLM's reply token by token (services.policy.reply), end with a final token that
carries the whole reply and its status, then remember what the character said. Turns of
one session, from speech and chat alike, are answered one after another: the runtime gives
a session's partitions of every topic to one replica.

A reply survives a crash: its progress is checkpointed with each token, and the replica
that takes the turn over goes on from the same text (the LLM continues it), so the words
already out are not said again and the reply reads as one. Sampling is seeded from the
turn, so a turn redone from its start says the same.

The turn's span is FastStream's (handling asr.final or chat.message); inside it,
`llm.generate` marks the first token. Tokens carry the trace onward without spans of
their own. A memory summary between turns is its own trace, linked to the turn.

An interrupt stops the turn's generation at the next token (status "interrupted"); when
playback reports how far the reply got, memory keeps only what was heard. A preemptive
turn (asr.final sent before the end of turn was certain) is answered like any other; if
the user went on instead (an Interrupt with reason "superseded"), memory forgets it: the
words continue in the next turn.

A chat that names a persona (an NPC: `ChatMessage.persona`) is answered as that persona
file instead of the live persona, with its session's memory as usual, so each NPC
remembers each player on its own (the gateway's sessions are `<npc>:<player>`).

Memory commands on control (MemoryClear, MemoryRestore, MemoryForget) reach every replica;
one applies each (the first to claim its message id), under the session's lock.

Long-term memory (services.policy.long_term): each turn recalls what it can within a time
budget, and the prompt gets it just before the user's line (the cached prefix stays the
same); a line that states a fact about its speaker is kept afterwards.

Tools (services.policy.tools): the LLM may call them before or while it answers. Each round
of calls runs with time limits, is published on tool.event and checkpointed with the reply,
so a turn taken over after a crash does not run them again; if they are slow, the character
says the filler line meanwhile.
"""

import asyncio
import logging
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from opentelemetry import trace
from opentelemetry.context import Context

from contracts import (
    AsrFinal,
    ChatMessage,
    Control,
    Interrupt,
    PersonaChange,
    PlaybackProgress,
    PolicyToken,
)
from contracts.control import Command, MemoryClear, MemoryForget, MemoryRestore
from contracts.limits import MAX_REASON_CHARS
from contracts.moderation import ModerationAction, ModerationVerdict
from contracts.policy import ReplyStatus
from contracts.topics import (
    ASR_FINAL,
    CHAT_MESSAGE,
    CONTROL,
    MODERATION,
    PLAYBACK_PROGRESS,
    POLICY_TOKEN,
    TOOL_EVENT,
    VISION_OBSERVATION,
)
from contracts.turns import SUPERSEDED
from contracts.vision import VisionObservation
from services.bus import Bus, Checkpointed, Publishes, Stage, consumes
from services.bus.tracing import turn_attributes
from services.memory.embedder import Embedder
from services.memory.long_term import LongTermMemory, open_long_term
from services.memory.settings import MemorySettings
from services.moderation import SAFE_AUTHOR, SPLIT_WINDOW, Moderator
from services.moderation.takeover import TakeoverCheck
from services.policy.backends import (
    BackendFailed,
    ChatBackend,
    Generation,
    Messages,
    complete,
    make_backend,
    routes_tools,
)
from services.policy.long_term import TurnMemory
from services.policy.memory import (
    Memory,
    MemoryBackups,
    MemoryStore,
)
from services.policy.memory_control import MemoryControl
from services.policy.persona import Persona, PersonaError, PersonaStore
from services.policy.reply import ReplyProgress, ReplyStream, TakeoverFound
from services.policy.settings import PolicySettings
from services.policy.tool_rounds import ToolRounds, ToolTurn
from services.policy.tools.builtin import BUILTIN_TOOLS
from services.policy.tools.declared import Tool
from services.policy.tools.gate import ToolGate
from services.policy.tools.runner import ToolRunner
from services.policy.tools.wire import MarkupFilter, ToolCall, ToolSpecs
from services.settings import load_settings
from services.telemetry.metrics import LLM_FIRST_TOKEN

log = logging.getLogger("marionette.policy")
tracer = trace.get_tracer("marionette.policy")

SUMMARY_PROMPT = (
    "Summarize this conversation between a streamer and chat in at most three short "
    "sentences. Keep every name and fact the viewers told."
)
WARM_UP = Generation(temperature=0.0, max_tokens=1, seed=0)


QUOTES = str.maketrans({"«": '"', "»": '"'})
RECENT_LINES = 6
"""The session's recent lines a reply is checked against (names and phrases viewers gave)."""
SUPERSEDED_KEPT = 1024
"""Superseded turns remembered (in memory only), so none is put back into memory late."""
VIEW_KEY = "marionette:vision:latest"
"""The latest observation (and `<key>:<session>`: a session's own), for describe_view."""
VIEW_KEPT_S = 3600
TRUSTED_PLATFORMS = ("control_panel", "cli")
"""Chat typed by the operator, not a viewer: it may use tools that act on the stream."""


_TAG = re.compile(r"\[[^\]\n]{1,40}\]")


def usable_tools(settings: PolicySettings, long_term: LongTermMemory | None) -> list[Tool]:
    """The tools settings allow, less those that need what this stage lacks."""
    memory_tools = ("remember", "recall")
    return [
        tool for tool in BUILTIN_TOOLS
        if tool.name in settings.tools and (long_term is not None or tool.name not in memory_tools)
    ]  # fmt: skip


def learns(progress: ReplyProgress) -> bool:
    """Whether long-term memory may keep the turn's line: answered (not refused, failed or
    cut short by a crash's error), and no tool was called for it."""
    return progress.status == "ok" and progress.tool_rounds == 0


def said_as_written(progress: ReplyProgress, said: str) -> str | None:
    """The LLM's text of a reply that was said as it wrote it (its expression tags aside:
    nothing bleeped, replaced or cut), else None: memory then prompts with what was said."""
    if progress.status != "ok" or progress.takeover is not None:
        return None
    written = progress.generated
    return written if _TAG.sub(" ", written).split() == said.split() else None


@dataclass(frozen=True)
class Turn:
    session_id: str
    turn_id: str
    text: str
    author: str | None = None  # None: the streamer's own voice
    persona: str | None = None  # a persona file to answer as; None: the live persona
    read_aloud: bool = False  # say who wrote what before answering
    message_id: str | None = None  # the message that opened the turn
    trusted: bool = False  # the streamer or the operator: may change the stream (tools)

    @property
    def may_act(self) -> bool:
        """May use tools that change the stream: the streamer's voice or the operator."""
        return self.author is None or self.trusted

    def as_user_message(self, author: str | None = None) -> str:
        """What the LLM is given: the streamer's words as they are; a chat line quoted,
        so the model takes it as something a viewer said, never as instructions."""
        if self.author is None:
            return self.text
        return f"{author or self.author} (in chat): «{self.text.translate(QUOTES)}»"


class PolicyStage(Stage):
    name = "policy"
    niceness = 8  # gives way to tts and asr on a small machine: see Stage.niceness
    tokens = Publishes(POLICY_TOKEN)
    verdicts = Publishes(MODERATION)
    replies = Checkpointed(ReplyProgress)
    tool_events = Publishes(TOOL_EVENT)
    controls = Publishes(CONTROL)  # what tools do to the stream (an OBS scene)

    def __init__(
        self,
        settings: PolicySettings,
        backend: ChatBackend,
        bus: Bus,
        long_term: LongTermMemory | None = None,
        gate: ToolGate | None = None,
    ) -> None:
        super().__init__(bus)
        self.settings = settings
        self.backend = backend
        self.long_term = long_term
        self.turn_memory = TurnMemory(long_term) if long_term is not None else None
        runner = ToolRunner(
            usable_tools(settings, long_term), self.tool_events.publish, settings.tool_timeout_s
        )
        # Routed tool calling needs the gate (a stage built without one uses no tools);
        # native offers the tools to the model with the reply.
        self.tool_rounds = ToolRounds(
            settings, backend, runner, gate, control=self._publish_control,
            latest_view=self.latest_view, long_term=long_term, keep=self._keep_progress,
            routed=bool(settings.tools) and routes_tools(settings, backend),
        )  # fmt: skip
        self.personas = PersonaStore(bus.store, settings.persona_file, settings.personas_dir)
        snapshots = long_term.store if long_term and long_term.settings.snapshots else None
        self.memories = MemoryStore(bus.store, settings.memory_window_s, snapshots)
        self.backups = MemoryBackups(bus.store, settings.memory_backup_days * 86_400)
        self.moderator = Moderator(settings.rules_dir)
        self._session_locks = bus.memory(lambda session: asyncio.Lock())
        self.memory_control = MemoryControl(
            bus.store, self.memories, self.backups, self._session_locks.__getitem__, long_term
        )
        self._folds: dict[str, asyncio.Task[None]] = {}  # per session: a summary in progress
        self._superseded: OrderedDict[tuple[str, str], None] = OrderedDict()

    @classmethod
    async def build(cls, bus: Bus) -> "PolicyStage":
        """Check the backend answers (loading the embedded model) and warm it up before
        taking turns."""
        settings = load_settings(PolicySettings)
        memory_settings = load_settings(MemorySettings)
        backend = make_backend(settings)
        await backend.check()
        long_term = None
        if memory_settings.long_term:  # the embedder and the store (ModelMissing if absent)
            long_term = open_long_term(memory_settings, bus.store)
        gate = None
        if settings.tools and routes_tools(settings, backend):
            embedder = long_term.embedder if long_term is not None else Embedder()
            tools = usable_tools(settings, long_term)
            gate = await asyncio.to_thread(ToolGate, embedder, tools)
        stage = cls(settings, backend, bus, long_term, gate)
        await stage.warm_up()
        return stage

    async def warm_up(self) -> None:
        """One token on the live persona's prompt: the model's first run allocates, and its
        cache then holds the prefix every turn starts with (the first turn is as fast as
        the others). A failure here is only logged: the turn will try again."""
        try:
            persona = await self.personas.current()
            await complete(self.backend, self.prompt(persona, Memory(), None), WARM_UP)
            if self.long_term is not None:  # the embedder's and the store's first use
                await self.long_term.recall([f"warm-up:{self.name}"], "hello")
        except (BackendFailed, PersonaError) as exc:
            log.warning("warm-up failed (%s); the first turn will be slower", exc)

    # --- handlers -----------------------------------------------------------------------

    @consumes(ASR_FINAL)
    async def on_speech(self, final: AsrFinal) -> None:
        turn_id = final.turn_id or final.origin
        await self.answer(Turn(final.session_id, turn_id, final.text, message_id=final.message_id))

    @consumes(CHAT_MESSAGE)
    async def on_chat(self, chat: ChatMessage) -> None:
        turn_id = chat.turn_id or chat.origin
        await self.answer(
            Turn(chat.session_id, turn_id, chat.text, chat.author, chat.persona,
                 chat.read_aloud, chat.message_id, trusted=self.trusts(chat))
        )  # fmt: skip

    @staticmethod
    def trusts(chat: ChatMessage) -> bool:
        """The operator's own chat, or the broadcaster's (the platform's badge)."""
        return chat.platform in TRUSTED_PLATFORMS or "broadcaster" in chat.badges

    @consumes(CONTROL)
    async def on_control(self, message: Control) -> None:
        command = message.command
        if isinstance(command, PersonaChange):
            try:
                persona = await self.personas.apply(command, message.created_at)
            except PersonaError as exc:
                log.error("persona change refused: %s", exc)
                return
            if persona is not None:
                log.info("persona is now %s (%s)", persona.name, persona.style)
        elif isinstance(command, MemoryClear | MemoryRestore):
            await self.memory_control.change(message.session_id, message.message_id, command)
        elif isinstance(command, MemoryForget):
            await self.memory_control.forget(message.message_id, command.author)
        elif isinstance(command, Interrupt) and command.reason == SUPERSEDED:
            await self.forget_superseded(message.session_id, command.target_turn_id)

    @consumes(VISION_OBSERVATION)
    async def on_view(self, seen: VisionObservation) -> None:
        """Keep the latest observation (the session's, and the latest of all) for the
        describe_view tool, in the shared store: any replica may answer the next turn."""
        data = seen.model_dump_json()
        await self.bus.store.set(f"{VIEW_KEY}:{seen.session_id}", data, ex=VIEW_KEPT_S)
        await self.bus.store.set(VIEW_KEY, data, ex=VIEW_KEPT_S)

    async def latest_view(self, session_id: str) -> VisionObservation | None:
        raw = await self.bus.store.get(f"{VIEW_KEY}:{session_id}") or await self.bus.store.get(
            VIEW_KEY
        )
        return None if raw is None else VisionObservation.model_validate_json(raw)

    @consumes(PLAYBACK_PROGRESS, drop_interrupted=False, while_off=True)
    async def on_progress(self, progress: PlaybackProgress) -> None:
        if progress.state == "flushed":
            await self.remember_heard(progress)

    # --- a turn ---------------------------------------------------------------------------

    def generation(self, turn: Turn) -> Generation:
        seed = self.settings.seed
        if seed is None:
            seed = zlib.crc32(f"{turn.session_id}:{turn.turn_id}".encode()) & 0x7FFFFFFF
        return Generation(self.settings.temperature, self.settings.max_tokens, seed)

    def prompt(
        self, persona: Persona, memory: Memory, turn: Turn | None, recalled: str | None = None
    ) -> Messages:
        """The request for a turn; without one, the prefix the session's next turn shares.
        What long-term memory recalled goes last before the user's line: the prefix that
        the model's cache holds stays the same."""
        messages: Messages = [
            {"role": "system", "content": persona.system_prompt()},
            *persona.few_shot(),
        ]
        if memory.summary:
            messages.append(
                {"role": "system", "content": f"Earlier in this stream: {memory.summary}"}
            )
        # Folds can be cancelled by new turns, so the recent messages are capped here too.
        messages += memory.as_prompt()[-self.settings.memory_messages :]
        if recalled:
            messages.append({"role": "system", "content": recalled})
        if turn is not None:
            author = self.author_in_prompt(turn, persona)
            messages.append({"role": "user", "content": turn.as_user_message(author)})
        return messages

    def author_in_prompt(self, turn: Turn, persona: Persona) -> str | None:
        """The author's name as the prompt may show it: a name that claims a role or
        carries orders is replaced."""
        if turn.author is None:
            return None
        allowed = self.moderator.prompt_author(turn.author, persona.name).allowed
        return turn.author if allowed else SAFE_AUTHOR

    async def persona_for(self, name: str | None) -> Persona:
        """The persona file a turn asks for (PersonaError if it cannot be read), else the
        live persona."""
        return self.personas.named(name) if name else await self.personas.current()

    async def answer(self, turn: Turn) -> str:
        # A summary between turns must not delay a viewer who is waiting: it gives way.
        fold = self._folds.pop(turn.session_id, None)
        if fold is not None:
            fold.cancel()
        async with self._session_locks[turn.session_id]:
            if (turn.session_id, turn.turn_id) in self._superseded:
                return ""  # dropped before it began: the user went on talking
            progress = await self.replies.load(turn.session_id, turn.turn_id) or ReplyProgress()
            try:
                persona = await self.persona_for(turn.persona)  # the turn keeps this persona
            except PersonaError as exc:
                log.error("%s/%s: %s", turn.session_id, turn.turn_id, exc)
                return await self._fail(turn, progress)
            memory = await self.memories.load(turn.session_id)
            scopes = self._scopes(turn, persona)
            if progress.status is None:
                recalled = await self._recall(turn, scopes)
                said = await self._reply(turn, persona, memory, progress, recalled)
            else:
                said = progress.reply  # said in full before a crash; only memory is left
            if (turn.session_id, turn.turn_id) in self._superseded:
                self.replies.forget(turn.session_id, turn.turn_id)
                return said  # the user went on: the next turn has all their words
            author = self.author_in_prompt(turn, persona)
            memory.remember(
                turn.turn_id, turn.as_user_message(author), said, author=turn.author,
                said=turn.text, generated=said_as_written(progress, said),
            )  # fmt: skip
            await self.memories.save(turn.session_id, memory)
            # A line that asked for a tool is a request, not a fact (remember keeps notes).
            if self.turn_memory is not None and learns(progress):
                await self.turn_memory.learn(
                    scopes, turn.session_id, turn.turn_id, turn.text, turn.author
                )
            self.replies.forget(turn.session_id, turn.turn_id)
            if self._fold_due(memory):
                self._fold_later(turn.session_id, turn.persona)
            return said

    def _scopes(self, turn: Turn, persona: Persona) -> list[str]:
        return self._scopes_of(turn.session_id, turn.persona, persona)

    def _scopes_of(self, session_id: str, npc: str | None, persona: Persona) -> list[str]:
        """Where a session's turns remember (none without long-term memory)."""
        if self.turn_memory is None:
            return []
        return self.turn_memory.scopes(session_id, npc, persona.name)

    async def _recall(self, turn: Turn, scopes: list[str]) -> str | None:
        if self.turn_memory is None:
            return None
        with tracer.start_as_current_span("memory.recall") as span:
            recalled = await self.turn_memory.recall(scopes, turn.text, turn.author)
            span.set_attribute("marionette.recalled", recalled is not None)
            return recalled

    async def _fail(self, turn: Turn, progress: ReplyProgress) -> str:
        """End a turn that cannot be answered (its persona file is missing or broken) with
        an empty "error" reply, so whoever waits for it hears of it; nothing is remembered."""
        if progress.status is None:
            live = await self.personas.current()
            await self._stream(turn, live, progress).finish("error")
        self.replies.forget(turn.session_id, turn.turn_id)
        return ""

    def _stream(
        self,
        turn: Turn,
        persona: Persona,
        progress: ReplyProgress,
        check: TakeoverCheck | None = None,
    ) -> ReplyStream:
        """The turn's reply stream; each token goes out with its progress checkpointed."""

        async def publish(token: PolicyToken, snapshot: ReplyProgress) -> None:
            self.replies.save(turn.session_id, turn.turn_id, snapshot)
            await self.tokens.publish(token)

        return ReplyStream(
            turn.session_id, turn.turn_id, persona, self.moderator, progress, publish, check
        )

    async def _reply(
        self,
        turn: Turn,
        persona: Persona,
        memory: Memory,
        progress: ReplyProgress,
        recalled: str | None = None,
    ) -> str:
        inputs = [*memory.recent_lines(RECENT_LINES), turn.text]
        check = TakeoverCheck(persona.name, persona.system_prompt(), inputs, persona.description)
        reply = self._stream(turn, persona, progress, check)
        await reply.resume()
        verdict = self.moderator.check_input(
            turn.text,
            persona.family_friendly,
            author=turn.author,
            recent=memory.lines_of(turn.author, SPLIT_WINDOW),
        )
        if not verdict.allowed:
            log.warning("%s/%s: refused: %s", turn.session_id, turn.turn_id, verdict.reason)
            if not progress.generated:
                await self.judged(
                    turn, "input", verdict.subject, "refused", verdict.reasons, verdict.excerpt
                )
                await reply.say(persona.safe_reply)
            return await reply.finish("blocked")
        renamed = turn.author is not None and self.author_in_prompt(turn, persona) != turn.author
        if renamed and turn.author is not None and not progress.generated:
            named = self.moderator.prompt_author(turn.author, persona.name)
            await self.judged(turn, "input", "author", "renamed", named.reasons, named.excerpt)
        if progress.generated:
            log.info("%s/%s: going on with a reply begun before a crash (%d tokens out)",
                     turn.session_id, turn.turn_id, progress.index)  # fmt: skip
        elif turn.read_aloud:
            await reply.say(f"{self.author_in_prompt(turn, persona)} asks: {turn.text}")
        try:
            if progress.takeover is None:
                messages = self.prompt(persona, memory, turn, recalled)
                status = await self._generate(reply, messages, turn, persona)
                return await reply.finish(status)
        except TakeoverFound as found:
            log.warning("%s/%s: reply replaced: %s", turn.session_id, turn.turn_id, found.reason)
            await reply.replace(found.reason, persona.safe_reply)
            await self.judged(turn, "output", "reply", "replaced", (found.reason,), found.clause)
        return await reply.finish("blocked")

    async def judged(
        self,
        turn: Turn,
        direction: Literal["input", "output"],
        subject: Literal["text", "author", "reply"],
        action: ModerationAction,
        reasons: Sequence[str],
        excerpt: str,
    ) -> None:
        """Publish what moderation did, so the panel and a replay show why."""
        await self.verdicts.publish(
            ModerationVerdict(
                session_id=turn.session_id, turn_id=turn.turn_id,
                message_id=f"{turn.turn_id}.moderation-{direction}-{subject}:0", seq=0,
                direction=direction, subject=subject, action=action,
                reasons=[r[:MAX_REASON_CHARS] for r in reasons][:8] or ["refused"],
                excerpt=excerpt[:MAX_REASON_CHARS], judged_message_id=turn.message_id,
                judged_by=self.name,
            )
        )  # fmt: skip

    async def _generate(
        self, reply: ReplyStream, messages: Messages, turn: Turn, persona: Persona
    ) -> ReplyStatus:
        with tracer.start_as_current_span(
            "llm.generate",
            attributes={
                **turn_attributes(turn.session_id, turn.turn_id),
                "marionette.backend": self.backend.name,
            },
        ) as span:
            status = await self._answer_with_tools(reply, messages, turn, persona, span)
            span.set_attribute("marionette.status", status)
            span.set_attribute("marionette.tokens", reply.index)
            return status

    async def _answer_with_tools(
        self,
        reply: ReplyStream,
        messages: Messages,
        turn: Turn,
        persona: Persona,
        span: trace.Span,
    ) -> ReplyStatus:
        """Stream the reply; when the model calls tools instead, run them and let it go on
        with their results (at most max_tool_rounds rounds)."""
        progress = reply.progress
        tool_turn = self._tool_turn(turn, persona)
        await self.tool_rounds.route(reply, tool_turn)
        while True:
            tools = self.tool_rounds.offered(tool_turn, progress)
            calls: list[ToolCall] = []
            status = await self._stream_reply(
                reply, [*messages, *progress.tool_messages], turn, span, tools, calls
            )
            if status != "ok" or not calls:
                return status
            await self.tool_rounds.run(reply, tool_turn, calls)
            if self.bus.interrupted(turn.session_id, turn.turn_id):
                return "interrupted"

    def _tool_turn(self, turn: Turn, persona: Persona) -> ToolTurn:
        return ToolTurn(
            session_id=turn.session_id, turn_id=turn.turn_id, text=turn.text,
            line=turn.as_user_message(self.author_in_prompt(turn, persona)),
            author=turn.author, may_act=turn.may_act, seed=self.generation(turn).seed,
            persona=persona.name, expressions=list(persona.expressions),
            scopes=self._scopes(turn, persona),
        )  # fmt: skip

    async def _publish_control(self, turn: ToolTurn, command: Command, n: int) -> None:
        """A tool's control command (an OBS scene), as the turn's n-th."""
        await self.controls.publish(
            Control(session_id=turn.session_id, turn_id=turn.turn_id, seq=0,
                    message_id=f"{turn.turn_id}.tool-control-{n}:0", command=command)
        )  # fmt: skip

    async def _keep_progress(self, turn: ToolTurn, progress: ReplyProgress) -> None:
        self.replies.save(turn.session_id, turn.turn_id, progress)
        await self.bus.checkpoint()  # now: a crash before the next token runs none again

    async def _stream_reply(
        self,
        reply: ReplyStream,
        messages: Messages,
        turn: Turn,
        span: trace.Span,
        tools: ToolSpecs | None = None,
        calls: list[ToolCall] | None = None,
    ) -> ReplyStatus:
        """One round of generation; the tool calls the model makes are put in calls."""
        options = self.generation(turn)
        for attempt in range(self.settings.retries + 1):
            try:
                asked = time.monotonic()
                progress = reply.progress
                prefix = progress.generated[progress.round_start :]
                if calls is not None:
                    calls.clear()  # a retried round starts over
                offered = {"tools": tools} if tools else {}  # backends without tools work
                # Once tools are about, a model may write their markup as text: not spoken.
                markup = MarkupFilter() if tools or progress.tool_messages else None
                async for token in self.backend.stream(messages, options, prefix, **offered):
                    if isinstance(token, ToolCall):
                        if calls is not None and tools:  # none offered: none taken
                            calls.append(token)
                        continue
                    if asked:
                        span.add_event("first_token")
                        LLM_FIRST_TOKEN.labels(self.backend.name).observe(time.monotonic() - asked)
                        asked = 0.0
                    if self.bus.interrupted(turn.session_id, turn.turn_id):
                        return "interrupted"  # leaving the loop stops the backend
                    text = token if markup is None else markup.feed(token)
                    if text:
                        await reply.add(text)
                if markup is not None and (rest := markup.flush()):
                    await reply.add(rest)
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

    async def forget_superseded(self, session: str, turn: str) -> None:
        """A preemptive turn the user went on from: never remembered (or forgotten now)."""
        self._superseded[(session, turn)] = None
        while len(self._superseded) > SUPERSEDED_KEPT:
            self._superseded.popitem(last=False)
        async with self._session_locks[session]:  # after the turn's own answer() ends
            memory = await self.memories.load(session)
            if memory.forget(turn):
                await self.memories.save(session, memory)

    async def remember_heard(self, progress: PlaybackProgress) -> None:
        """An interrupted reply: memory keeps what was played of it, marked as cut off."""
        session, turn = progress.session_id, progress.turn_id or ""
        if (session, turn) in self._superseded:
            return  # never played, and forgotten
        async with self._session_locks[session]:
            memory = await self.memories.load(session)
            if memory.cut_short(turn, progress.heard_text or ""):
                await self.memories.save(session, memory)
            else:
                log.warning("%s/%s: interrupted, but that reply is not in memory", session, turn)

    # --- memory summaries, between turns -------------------------------------------------

    async def settled(self) -> None:
        """Wait for the summaries in progress (tests; a clean stop)."""
        await asyncio.gather(*self._folds.values(), return_exceptions=True)

    def _fold_due(self, memory: Memory) -> bool:
        keep = self.settings.memory_messages // 2
        return memory.since_summary >= self.settings.summary_every and len(memory.messages) > keep

    def _fold_later(self, session_id: str, persona_name: str | None = None) -> None:
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
                    persona = await self.persona_for(persona_name)
                    scopes = self._scopes_of(session_id, persona_name, persona)
                    await self._fold(memory, session_id, scopes)
                    await self.memories.save(session_id, memory)
                    # The summary's own request displaced the session's prompt in the
                    # model's cache: evaluate the next turn's prefix now, while idle.
                    await complete(self.backend, self.prompt(persona, memory, None), WARM_UP)

        def done(task: "asyncio.Task[None]") -> None:
            if self._folds.get(session_id) is task:
                del self._folds[session_id]
            if not task.cancelled() and task.exception() is not None:
                log.error("summarizing %s failed: %r", session_id, task.exception())

        task = asyncio.create_task(fold(), name=f"fold-{session_id}")
        task.add_done_callback(done)
        self._folds[session_id] = task

    async def _fold(self, memory: Memory, session_id: str = "", scopes: Sequence[str] = ()) -> None:
        """Every N messages, fold all but the most recent into the running summary."""
        keep = self.settings.memory_messages // 2
        older, memory.messages = memory.messages[:-keep], memory.messages[-keep:]
        transcript = "\n".join(f"{m.role}: {m.content}" for m in older)
        request: Messages = [
            {"role": "system", "content": SUMMARY_PROMPT},
            {"role": "user", "content": f"Summary so far: {memory.summary}\n\n{transcript}"},
        ]
        options = Generation(0.0, 120, 0, aside=True)
        try:
            memory.summary = (await complete(self.backend, request, options)).strip()[:2000]
        except BackendFailed as exc:
            log.warning("could not summarize memory (%s); keeping the old summary", exc)
        memory.since_summary = 0
        if self.turn_memory is not None and scopes:
            await self.turn_memory.episode(scopes, session_id, memory.summary)
