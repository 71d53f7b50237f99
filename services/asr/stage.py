"""asr: audio.frame in; asr.speech, asr.partial and asr.final out.

Per session, an Endpointer finds utterances. The final transcript starts as soon as the
trailing silence begins (speculatively), so by the time the endpoint is certain it is
usually done; only new speech in between makes it start over.
"""

import asyncio
import logging
from dataclasses import dataclass, field

from contracts import AsrFinal, AsrPartial, AudioFrame, SpeechEvent
from contracts.topics import ASR_FINAL, ASR_PARTIAL, ASR_SPEECH, AUDIO_FRAME
from services.asr.endpointer import (
    Endpointer,
    FinalReady,
    PartialDue,
    SpeechEnded,
    SpeechStarted,
)
from services.asr.recognizer import FasterWhisperRecognizer, SpeechRecognizer, Transcript
from services.asr.settings import AsrSettings
from services.asr.vad import make_vad
from services.bus import Stage
from services.bus.settings import load_settings

log = logging.getLogger("marionette.asr")

stage = Stage("asr")
speech_events = stage.publisher(ASR_SPEECH)
partials = stage.publisher(ASR_PARTIAL)
finals = stage.publisher(ASR_FINAL)


@dataclass
class Speculation:
    audio: bytes
    task: "asyncio.Task[Transcript]"


@dataclass
class SessionListener:
    endpointer: Endpointer
    turn_id: str = ""
    partial_seq: int = 0
    final_started: bool = False
    partial_task: "asyncio.Task[None] | None" = None
    speculation: Speculation | None = None
    tasks: set["asyncio.Task[object]"] = field(default_factory=set)


class AsrService:
    def __init__(self, settings: AsrSettings, recognizer: SpeechRecognizer) -> None:
        self.settings = settings
        self.recognizer = recognizer
        self.listeners: dict[str, SessionListener] = {}

    def _listener(self, session_id: str) -> SessionListener:
        if session_id not in self.listeners:
            endpointer = Endpointer(self.settings, make_vad(self.settings))
            self.listeners[session_id] = SessionListener(endpointer)
        return self.listeners[session_id]

    async def _transcribe(self, pcm: bytes) -> Transcript:
        return await asyncio.to_thread(self.recognizer.transcribe, pcm)

    async def handle(self, frame: AudioFrame) -> None:
        listener = self._listener(frame.session_id)
        at_s = frame.seq * frame.duration_ms / 1000
        for event in listener.endpointer.push(frame.pcm, at_s):
            if isinstance(event, SpeechStarted):
                await self._on_start(frame.session_id, listener, event)
            elif isinstance(event, PartialDue):
                self._start_partial(frame.session_id, listener, event.audio)
            elif isinstance(event, SpeechEnded):
                await speech_events.publish(
                    SpeechEvent(
                        session_id=frame.session_id, turn_id=listener.turn_id, seq=1,
                        state="end", at_s=event.speech_end_s,
                    )
                )  # fmt: skip
            elif event.endpoint:
                await self._finish(frame.session_id, listener, event)
            else:
                task = asyncio.create_task(self._transcribe(event.audio))
                listener.speculation = Speculation(event.audio, task)

    async def _on_start(
        self, session: str, listener: SessionListener, event: SpeechStarted
    ) -> None:
        # Derived from the audio timeline, so a replay of the same audio gets the same turn.
        listener.turn_id = f"u{round(event.utterance_start_s * 1000)}"
        listener.partial_seq = 0
        listener.final_started = False
        listener.speculation = None
        await speech_events.publish(
            SpeechEvent(
                session_id=session, turn_id=listener.turn_id, seq=0,
                state="start", at_s=event.speech_start_s,
            )
        )  # fmt: skip

    def _start_partial(self, session: str, listener: SessionListener, audio: bytes) -> None:
        if listener.partial_task is not None and not listener.partial_task.done():
            return  # still busy with the previous one; a stale partial is no use
        turn_id = listener.turn_id

        async def run() -> None:
            transcript = await self._transcribe(audio)
            if not transcript.text or listener.final_started or listener.turn_id != turn_id:
                return
            await partials.publish(
                AsrPartial(
                    session_id=session, turn_id=turn_id, seq=listener.partial_seq,
                    text=transcript.text, speech_start_s=0.0,
                )
            )  # fmt: skip
            listener.partial_seq += 1

        listener.partial_task = asyncio.create_task(run())

    async def _finish(self, session: str, listener: SessionListener, event: FinalReady) -> None:
        listener.final_started = True
        speculation, listener.speculation = listener.speculation, None
        if speculation is not None and speculation.audio == event.audio:
            transcript = await speculation.task
        else:
            transcript = await self._transcribe(event.audio)
        if not transcript.text:
            log.info("%s/%s: no words in that utterance", session, listener.turn_id)
            return
        await finals.publish(
            AsrFinal(
                session_id=session, turn_id=listener.turn_id, seq=0,
                text=transcript.text[:4000], language=transcript.language,
                confidence=transcript.confidence,
                speech_start_s=event.speech_start_s, speech_end_s=event.speech_end_s,
            )
        )  # fmt: skip


_service: AsrService | None = None


def service() -> AsrService:
    """Built on first use, so that importing the stage (for AsyncAPI) loads no model."""
    global _service
    if _service is None:
        settings = load_settings(AsrSettings)
        _service = AsrService(settings, FasterWhisperRecognizer(settings))
    return _service


@stage.consumer(AUDIO_FRAME)
async def on_frame(frame: AudioFrame) -> None:
    await service().handle(frame)
