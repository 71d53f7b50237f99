"""tts: policy.token in; tts.chunk out, one speakable unit at a time.

Tokens of a turn are gathered into units (a short first clause, then sentences); each unit
is normalized for speech and synthesized as soon as it is complete, so the first audio is
out while the LLM is still writing. The last chunk of a turn has final=True (an empty one
if the reply ended without text to speak).

An interrupt on `control` ends a turn here at once: what is being synthesized is not
published, the rest of its text is dropped, and its later tokens are dropped by turn id.

A turn's work here is one span, `tts.speak`, from its first token to its last chunk,
with a `tts.synthesize` span per unit; its chunks continue the turn's trace.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field

from opentelemetry import trace

from contracts import Control, PolicyToken, TtsChunk
from contracts.limits import MAX_EXPRESSIONS
from contracts.topics import CONTROL, POLICY_TOKEN, TTS_CHUNK
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.service_slot import ServiceSlot
from services.bus.settings import load_settings
from services.bus.tracing import turn_attributes
from services.telemetry.metrics import TTS_FIRST_AUDIO
from services.tts.normalize import normalize_for_speech
from services.tts.settings import TtsSettings
from services.tts.splitter import SentenceSplitter
from services.tts.synthesizer import Speech, SpeechSynthesizer, make_synthesizer

log = logging.getLogger("marionette.tts")
tracer = trace.get_tracer("marionette.tts")

stage = Stage("tts")
chunks_out = stage.publisher(TTS_CHUNK)


@dataclass
class TurnSpeech:
    splitter: SentenceSplitter
    span: trace.Span
    index: int = 0
    expressions: list[str] = field(default_factory=list)
    first_token_at: float = field(default_factory=time.monotonic)


class TtsService:
    def __init__(self, settings: TtsSettings, synthesizer: SpeechSynthesizer) -> None:
        self.settings = settings
        self.synthesizer = synthesizer
        self.turns: dict[tuple[str, str], TurnSpeech] = {}
        self._synthesis = asyncio.Lock()

    def _turn(self, token: PolicyToken) -> TurnSpeech:
        key = (token.session_id, token.turn_id or "")
        if key not in self.turns:
            splitter = SentenceSplitter(
                self.settings.first_fragment_words, self.settings.max_unit_chars
            )
            # The current context is the token's: the span joins the turn's trace.
            span = tracer.start_span(
                "tts.speak", attributes=turn_attributes(token.session_id, token.turn_id)
            )
            self.turns[key] = TurnSpeech(splitter, span)
        return self.turns[key]

    async def handle(self, token: PolicyToken) -> None:
        if stage.interrupted.covers(token):
            return  # it was interrupted while this token waited
        turn = self._turn(token)
        turn.expressions += token.expressions
        units = turn.splitter.feed(token.text)
        if token.final:
            units += turn.splitter.flush()
            del self.turns[(token.session_id, token.turn_id or "")]
        with trace.use_span(turn.span, end_on_exit=token.final):
            for number, unit in enumerate(units):
                last = token.final and number == len(units) - 1
                if not await self._speak(token, turn, unit, last):
                    return
            if token.final and not units:
                await self._speak(token, turn, "", final=True)

    def interrupt(self, session_id: str, turn_id: str) -> None:
        turn = self.turns.pop((session_id, turn_id), None)
        if turn is not None:
            turn.span.set_attribute("marionette.interrupted", True)
            turn.span.end()

    async def _speak(self, token: PolicyToken, turn: TurnSpeech, text: str, final: bool) -> bool:
        """Synthesize and publish one unit; False when the turn was interrupted meanwhile."""
        if text:
            with tracer.start_as_current_span("tts.synthesize") as span:
                speech = await self._synthesize(text)
                audio_s = len(speech.pcm) / 2 / speech.sample_rate
                span.set_attributes({"marionette.chars": len(text), "marionette.audio_s": audio_s})
        else:
            speech = Speech(b"", self.synthesizer.sample_rate, [])
        if stage.interrupted.covers(token):
            return False
        await chunks_out.publish(
            TtsChunk(
                session_id=token.session_id, turn_id=token.turn_id, seq=turn.index,
                index=turn.index, final=final, text=text, sample_rate=speech.sample_rate,
                pcm=speech.pcm, alignments=speech.alignments,
                expressions=turn.expressions[:MAX_EXPRESSIONS],
            )
        )  # fmt: skip
        if turn.index == 0:
            TTS_FIRST_AUDIO.labels(self.settings.backend).observe(
                time.monotonic() - turn.first_token_at
            )
        turn.index += 1
        turn.expressions = []
        return True

    async def _synthesize(self, text: str) -> Speech:
        spoken = normalize_for_speech(text)
        async with self._synthesis:
            return await asyncio.to_thread(self.synthesizer.synthesize, spoken)


async def build_service() -> TtsService:
    settings = load_settings(TtsSettings)
    synthesizer = await asyncio.to_thread(make_synthesizer, settings)
    return TtsService(settings, synthesizer)


service = ServiceSlot(build_service)


@stage.consumer(POLICY_TOKEN, drop_interrupted=True)
async def on_token(token: PolicyToken) -> None:
    await (await service.get()).handle(token)


@stage.consumer(CONTROL)
async def on_control(message: Control) -> None:
    interrupt = stage.interrupted.note(message)
    if interrupt is not None:
        (await service.get()).interrupt(message.session_id, interrupt.target_turn_id)


async def main(bus: BusSettings, stop: asyncio.Event) -> None:
    """`marionette run tts`: load the voice, then consume."""
    await service.get()
    await StageRuntime(stage, bus).run(stop)
