"""tts: policy.token in; tts.chunk out, one speakable unit at a time.

Tokens of a turn are gathered into units (a short first clause, then sentences); each unit
is normalized for speech and synthesized as soon as it is complete, so the first audio is
out while the LLM is still writing. Chunks of a turn are numbered from 0 without a gap, and
the last has final=True (an empty one if the reply ended without text to speak).

What a turn has built here (the splitter's place in the text, the units waiting, the next
chunk number) is checkpointed with each chunk, so a replica that takes the turn over after a
crash goes on with the next word: every word spoken once, in order.

An interrupt ends a turn here at once: what is being synthesized is not published, and the
runtime drops the turn's later tokens.

A turn's work here is one span, `tts.speak`, from its first token to its last chunk,
with a `tts.synthesize` span per unit; its chunks continue the turn's trace.
"""

import asyncio
import logging
import time

from opentelemetry import trace
from pydantic import BaseModel, Field

from contracts import PolicyToken, TtsChunk
from contracts.limits import MAX_EXPRESSIONS
from contracts.topics import POLICY_TOKEN, TTS_CHUNK
from services.bus import Bus, Checkpointed, Publishes, Stage, consumes
from services.bus.tracing import turn_attributes
from services.settings import load_settings
from services.telemetry.metrics import TTS_FIRST_AUDIO
from services.tts.normalize import normalize_for_speech
from services.tts.settings import TtsSettings
from services.tts.splitter import SentenceSplitter, SplitterState
from services.tts.synthesizer import Speech, SpeechSynthesizer, make_synthesizer

log = logging.getLogger("marionette.tts")
tracer = trace.get_tracer("marionette.tts")


class TurnSpeech(BaseModel):
    """A turn's progress in tts, checkpointed with every chunk it publishes."""

    read_through: int = -1  # the last token index taken into the splitter
    splitter: SplitterState = Field(default_factory=SplitterState)
    waiting: list[str] = Field(default_factory=list)  # units cut, not yet spoken
    next_index: int = 0
    expressions: list[str] = Field(default_factory=list)
    reply_done: bool = False  # the final token has been read
    final_sent: bool = False


class TtsStage(Stage):
    name = "tts"
    interruptible = True
    chunks = Publishes(TTS_CHUNK)
    speech = Checkpointed(TurnSpeech)

    def __init__(self, settings: TtsSettings, synthesizer: SpeechSynthesizer, bus: Bus) -> None:
        super().__init__(bus)
        self.settings = settings
        self.synthesizer = synthesizer
        self._synthesis = asyncio.Lock()  # one unit at a time, whichever partition
        self._spans: dict[tuple[str, str], trace.Span] = {}
        self._first_token_at: dict[tuple[str, str], float] = {}

    @classmethod
    async def build(cls, bus: Bus) -> "TtsStage":
        settings = load_settings(TtsSettings)
        synthesizer = await asyncio.to_thread(make_synthesizer, settings)
        # The first synthesis allocates and tunes: done here, the first reply is not slower.
        await asyncio.to_thread(synthesizer.synthesize, "Hello there.")
        return cls(settings, synthesizer, bus)

    @consumes(POLICY_TOKEN)
    async def on_token(self, token: PolicyToken) -> None:
        session, turn_id = token.session_id, token.turn_id or ""
        turn = await self.speech.load(session, turn_id) or TurnSpeech()
        if token.index > turn.read_through:  # a token redelivered after a crash may not be
            self._read(turn, token)
            self.speech.save(session, turn_id, turn)
        with trace.use_span(self._span(token), end_on_exit=False):
            if not await self._speak_waiting(token, turn):
                return
        if turn.reply_done and turn.final_sent:
            self.speech.forget(session, turn_id)
            self._end_span((session, turn_id))

    def _read(self, turn: TurnSpeech, token: PolicyToken) -> None:
        splitter = SentenceSplitter(
            self.settings.first_fragment_words,
            self.settings.max_unit_chars,
            self.settings.first_clause_words,
        )
        splitter.restore(turn.splitter)
        units = splitter.feed(token.text)
        if token.final:
            units += splitter.flush()
            turn.reply_done = True
        turn.splitter = splitter.snapshot()
        turn.waiting += units
        turn.expressions += token.expressions
        turn.read_through = token.index

    async def _speak_waiting(self, token: PolicyToken, turn: TurnSpeech) -> bool:
        """Speak the units waiting, in order; False when the turn was interrupted meanwhile."""
        while turn.waiting or (turn.reply_done and not turn.final_sent):
            text = turn.waiting[0] if turn.waiting else ""
            speech = await self._synthesize(text)
            if not self.wanted(token):
                return False
            if turn.waiting:
                turn.waiting.pop(0)
            index, turn.next_index = turn.next_index, turn.next_index + 1
            final = turn.reply_done and not turn.waiting
            expressions, turn.expressions = turn.expressions[:MAX_EXPRESSIONS], []
            turn.final_sent = final
            self.speech.save(token.session_id, token.turn_id or "", turn)  # with the chunk
            await self.chunks.publish(
                TtsChunk(
                    session_id=token.session_id, turn_id=token.turn_id, seq=index,
                    index=index, final=final, text=text, sample_rate=speech.sample_rate,
                    pcm=speech.pcm, alignments=speech.alignments, expressions=expressions,
                )
            )  # fmt: skip
            if index == 0:
                started = self._first_token_at.pop((token.session_id, token.turn_id or ""), None)
                if started is not None:
                    TTS_FIRST_AUDIO.labels(self.settings.backend).observe(
                        time.monotonic() - started
                    )
        return True

    async def _synthesize(self, text: str) -> Speech:
        if not text:
            return Speech(b"", self.synthesizer.sample_rate, [])
        with tracer.start_as_current_span("tts.synthesize") as span:
            spoken = normalize_for_speech(text)
            async with self._synthesis:
                speech = await asyncio.to_thread(self.synthesizer.synthesize, spoken)
            audio_s = len(speech.pcm) / 2 / speech.sample_rate
            span.set_attributes({"marionette.chars": len(text), "marionette.audio_s": audio_s})
            return speech

    def _span(self, token: PolicyToken) -> trace.Span:
        key = (token.session_id, token.turn_id or "")
        if key not in self._spans:
            # The current context is the token's: the span joins the turn's trace.
            self._spans[key] = tracer.start_span(
                "tts.speak", attributes=turn_attributes(token.session_id, token.turn_id)
            )
            self._first_token_at[key] = time.monotonic()
        return self._spans[key]

    def _end_span(self, key: tuple[str, str], *, interrupted: bool = False) -> None:
        span = self._spans.pop(key, None)
        self._first_token_at.pop(key, None)
        if span is not None:
            if interrupted:
                span.set_attribute("marionette.interrupted", True)
            span.end()

    async def on_interrupt(self, session_id: str, turn_id: str) -> None:
        self.speech.forget(session_id, turn_id)
        self._end_span((session_id, turn_id), interrupted=True)
