"""tts: policy.token in; tts.chunk out, one speakable unit at a time.

Tokens of a turn are gathered into units (a short first clause, then sentences); each unit
is normalized for speech and synthesized as soon as it is complete, so the first audio is
out while the LLM is still writing. The last chunk of a turn has final=True (an empty one
if the reply ended without text to speak).
"""

import asyncio
import logging
from dataclasses import dataclass, field

from contracts import PolicyToken, TtsChunk
from contracts.limits import MAX_EXPRESSIONS
from contracts.topics import POLICY_TOKEN, TTS_CHUNK
from services.bus import BusSettings, Stage, StageRuntime
from services.bus.service_slot import ServiceSlot
from services.bus.settings import load_settings
from services.tts.normalize import normalize_for_speech
from services.tts.settings import TtsSettings
from services.tts.splitter import SentenceSplitter
from services.tts.synthesizer import Speech, SpeechSynthesizer, make_synthesizer

log = logging.getLogger("marionette.tts")

stage = Stage("tts")
chunks_out = stage.publisher(TTS_CHUNK)


@dataclass
class TurnSpeech:
    splitter: SentenceSplitter
    index: int = 0
    expressions: list[str] = field(default_factory=list)


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
            self.turns[key] = TurnSpeech(splitter)
        return self.turns[key]

    async def handle(self, token: PolicyToken) -> None:
        turn = self._turn(token)
        turn.expressions += token.expressions
        units = turn.splitter.feed(token.text)
        if token.final:
            units += turn.splitter.flush()
            del self.turns[(token.session_id, token.turn_id or "")]
        for number, unit in enumerate(units):
            last = token.final and number == len(units) - 1
            await self._speak(token, turn, unit, last)
        if token.final and not units:
            await self._speak(token, turn, "", final=True)

    async def _speak(self, token: PolicyToken, turn: TurnSpeech, text: str, final: bool) -> None:
        if text:
            speech = await self._synthesize(text)
        else:
            speech = Speech(b"", self.synthesizer.sample_rate, [])
        await chunks_out.publish(
            TtsChunk(
                session_id=token.session_id, turn_id=token.turn_id, seq=turn.index,
                index=turn.index, final=final, text=text, sample_rate=speech.sample_rate,
                pcm=speech.pcm, alignments=speech.alignments,
                expressions=turn.expressions[:MAX_EXPRESSIONS],
            )
        )  # fmt: skip
        turn.index += 1
        turn.expressions = []

    async def _synthesize(self, text: str) -> Speech:
        spoken = normalize_for_speech(text)
        async with self._synthesis:
            return await asyncio.to_thread(self.synthesizer.synthesize, spoken)


async def build_service() -> TtsService:
    settings = load_settings(TtsSettings)
    synthesizer = await asyncio.to_thread(make_synthesizer, settings)
    return TtsService(settings, synthesizer)


service = ServiceSlot(build_service)


@stage.consumer(POLICY_TOKEN)
async def on_token(token: PolicyToken) -> None:
    await (await service.get()).handle(token)


async def main(bus: BusSettings, stop: asyncio.Event) -> None:
    """`marionette run tts`: load the voice, then consume."""
    await service.get()
    await StageRuntime(stage, bus).run(stop)
