"""asr: audio.frame and playback.progress in; asr.speech, asr.partial, asr.final and
control (barge-in) out.

Per session, an Endpointer finds utterances. At the first short pause (speculate_after_ms)
the final transcript starts, with the end-of-turn decision beside it (services.asr.
turn_model: Smart Turn on the audio, then the transcript's last word): a turn that sounds
finished ends after finished_silence_ms of silence, one that does not after
unfinished_silence_ms.

Preemptive turns: when the pause sounds final, the transcript goes out at once as a
preemptive asr.final, so policy and tts prepare the reply while the silence is confirmed;
playback holds it until asr.speech "end" (the end of turn). If the user goes on instead,
an Interrupt with reason "superseded" drops that turn everywhere (memory forgets it) and
the utterance continues as a new turn (`utterance_turn_id(..., attempt)`).

The recognizer does one job at a time, and a job that is no longer wanted when its turn
comes (a partial once the final has started, a speculation the speaker talked over) is
skipped, so the final never waits behind stale work.

While the character talks (playback.progress says so), a BargeIn per session gates the VAD
against its echo and decides when the user talks over it: a pause on `control` at once,
then an interrupt once it is clearly speech, or letting it go on if it was a cough; the
speech that only paused it is not published as a turn. With resume_false_interruption,
speech long enough to interrupt keeps the character paused until its words are known (at
the first pause, with the transcript): none, or only backchannels ("yeah", "uh-huh"), and
the character goes on where it paused; words, and the interrupt goes out then.

Frames are held unacknowledged while an utterance may still need them, and released (in
the same write as the final transcript, or once the session is quiet again, keeping the
pre-roll) when it cannot: a replica that takes the session over after a crash hears the
open utterance again from its first frame, and none is lost or answered twice. The end of
an input (a file, a remote microphone) ends an utterance still open.

Each utterance is one span, the root of its turn's trace: it starts at the capture time
of the first speech frame, marks the end of speech, and ends when the final is out.
Everything asr publishes about the utterance is inside it; frames get no spans.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace
from opentelemetry.context import Context
from pydantic import BaseModel

from contracts import (
    AsrFinal,
    AsrPartial,
    AudioFrame,
    Control,
    Interrupt,
    Pause,
    PlaybackProgress,
    SpeechEvent,
    TtsChunk,
)
from contracts.limits import AUDIO_SAMPLE_RATE
from contracts.topics import (
    ASR_FINAL,
    ASR_PARTIAL,
    ASR_SPEECH,
    AUDIO_FRAME,
    CONTROL,
    PLAYBACK_PROGRESS,
    TTS_CHUNK,
)
from contracts.turns import SUPERSEDED, utterance_turn_id
from services.asr.backchannel import is_backchannel, phrases
from services.asr.barge_in import BargeIn, BargeInEvent, Hold, Resume
from services.asr.echo_canceller import WebRtcEchoCanceller
from services.asr.echo_path import EchoPath
from services.asr.echo_reference import EchoReference
from services.asr.endpointer import (
    Endpointer,
    Event,
    FinalReady,
    PartialDue,
    SpeculationCancelled,
    SpeechEnded,
    SpeechStarted,
)
from services.asr.recognizer import FasterWhisperRecognizer, SpeechRecognizer, Transcript
from services.asr.settings import AsrSettings
from services.asr.turn_model import SmartTurn, TurnJudge, TurnModel, TurnVerdict
from services.asr.vad import make_vad
from services.bus import Bus, Checkpointed, Publishes, SessionMemory, Stage, consumes
from services.bus.tracing import turn_attributes
from services.models.bundled import smart_turn_model_path
from services.settings import load_settings
from services.telemetry.metrics import (
    ASR_FINAL_LATENCY,
    END_OF_TURN,
    FALSE_INTERRUPTIONS,
    PREEMPTIVE_TURNS,
)

log = logging.getLogger("marionette.asr")
tracer = trace.get_tracer("marionette.asr")


SAME_UTTERANCE_S = 0.5
"""An utterance heard again after a crash may start a frame or two apart (the voice
activity detector adapts to what it heard before): within this, it is the same one."""


class OpenUtterance(BaseModel):
    """The utterance a session is in, checkpointed with its start event: a replica that
    hears its frames again after a crash gives it the same turn (its first attempt: the
    preemptive turns it superseded are made again with the same ids, and dropped as
    copies downstream)."""

    capture_run: str
    turn_id: str
    utterance_start_s: float
    speech_start_s: float


@dataclass
class Speculation:
    """The transcript and end-of-turn decision started at a pause."""

    event: FinalReady
    task: "asyncio.Task[Transcript | None]"
    preempted: bool = False  # its transcript went out as a preemptive asr.final

    @property
    def audio(self) -> bytes:
        return self.event.audio


@dataclass
class SessionListener:
    endpointer: Endpointer
    capture_run: str  # the frames' origin: a new run restarts the timeline
    turn_id: str = ""
    utterance_start_ms: int = 0  # names its turns
    attempt: int = 0  # preemptive turns superseded in this utterance
    speech_start_s: float = 0.0
    partial_seq: int = 0
    final_started: bool = False
    speculation: Speculation | None = None
    span: trace.Span = trace.INVALID_SPAN  # the current utterance's
    backchannel: bool = False  # the utterance only paused the character: not a turn
    false_alarm: bool = False  # backchannel because its words were none or backchannels
    pending_interrupt: str | None = None  # a turn held paused until the words are known
    pending_since_s: float = 0.0
    at_s: float = 0.0  # the latest frame's place in the audio timeline
    wall_offset_s: float = 0.0  # capture time minus audio time, from the latest frame
    controls: int = 0  # barge-in controls published for this run (their seq)

    def wall_ns(self, audio_s: float) -> int:
        return round((self.wall_offset_s + audio_s) * 1e9)


def _log_failure(task: "asyncio.Task[object]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background transcription failed: %r", task.exception())


class AsrStage(Stage):
    name = "asr"
    speech_events = Publishes(ASR_SPEECH)
    partials = Publishes(ASR_PARTIAL)
    finals = Publishes(ASR_FINAL)
    controls = Publishes(CONTROL)
    utterances = Checkpointed(OpenUtterance)

    def __init__(
        self,
        settings: AsrSettings,
        recognizer: SpeechRecognizer,
        bus: Bus,
        turn_model: TurnModel | None = None,
    ) -> None:
        """turn_model: None decides by silence alone (end_of_turn "silence")."""
        super().__init__(bus)
        self.settings = settings
        self.recognizer = recognizer
        self.turn_model = turn_model
        self.judge = TurnJudge(threshold=settings.turn_threshold)
        self.backchannels = phrases(settings.backchannels)
        # Rebuilt from held frames when a session moves here: not checkpointed.
        self.listeners: SessionMemory[SessionListener | None] = bus.memory(lambda s: None)
        self.barge_ins = bus.memory(lambda s: BargeIn(settings, make_vad(settings)))
        self.echoes: SessionMemory[EchoPath] | None = None
        if settings.echo_cancellation:
            WebRtcEchoCanceller()  # a missing package fails the start, not the first frame
            delay_s = settings.echo_output_delay_ms / 1000
            tail_s = settings.echo_tail_ms / 1000
            self.echoes = bus.memory(
                lambda s: EchoPath(EchoReference(delay_s), WebRtcEchoCanceller(), tail_s)
            )
        self._recognizer_turn = asyncio.Lock()  # FIFO: jobs run in the order asked

    @classmethod
    async def build(cls, bus: Bus) -> "AsrStage":
        """Load the models and run each once (the first run of a model is slow), then
        listen: the first turn is as fast as the others."""
        settings = load_settings(AsrSettings)
        recognizer = await asyncio.to_thread(FasterWhisperRecognizer, settings)
        turn_model: TurnModel | None = None
        if settings.end_of_turn == "smart-turn":
            path = smart_turn_model_path()
            turn_model = await asyncio.to_thread(SmartTurn, path, settings.turn_model_threads)
        await asyncio.to_thread(warm_up, recognizer, turn_model)
        return cls(settings, recognizer, bus, turn_model)

    @consumes(AUDIO_FRAME)
    async def on_frame(self, frame: AudioFrame) -> None:
        await self.handle(frame)

    @consumes(PLAYBACK_PROGRESS)
    async def on_progress(self, progress: PlaybackProgress) -> None:
        self.barge_ins[progress.session_id].on_progress(progress)
        if self.echoes is not None:
            self.echoes[progress.session_id].reference.on_progress(progress)

    @consumes(TTS_CHUNK)
    async def on_chunk(self, chunk: TtsChunk) -> None:
        """The character's audio: the echo canceller's far end (without one, ignored)."""
        if self.echoes is not None:
            self.echoes[chunk.session_id].reference.add_chunk(chunk)

    def _listener(self, frame: AudioFrame) -> SessionListener:
        listener = self.listeners[frame.session_id]
        if listener is None or listener.capture_run != frame.origin:
            wait_ms = (
                self.settings.unfinished_silence_ms
                if self.turn_model is not None
                else self.settings.end_silence_ms
            )  # until the pause is judged
            endpointer = Endpointer(self.settings, self.barge_ins[frame.session_id], wait_ms)
            listener = SessionListener(endpointer, capture_run=frame.origin)
            self.listeners.put(frame.session_id, listener)
        return listener

    async def _transcribe(
        self, pcm: bytes, wanted: Callable[[], bool] = lambda: True
    ) -> Transcript | None:
        async with self._recognizer_turn:
            if not wanted():
                return None
            return await asyncio.to_thread(self.recognizer.transcribe, pcm)

    def _background(self, job: "asyncio.Future[object] | asyncio.Task[object]") -> None:
        job.add_done_callback(_log_failure)  # type: ignore[arg-type]

    async def handle(self, frame: AudioFrame) -> None:
        listener = self._listener(frame)
        at_s = frame.seq * frame.duration_ms / 1000
        listener.wall_offset_s = frame.captured_at - at_s
        listener.at_s = at_s
        self.bus.hold()
        events = listener.endpointer.push(self._without_echo(frame), at_s)
        if frame.end_of_input:
            events += listener.endpointer.finish()
        for barge_in in self.barge_ins[frame.session_id].drain():
            await self._on_barge_in(frame.session_id, listener, barge_in)
        timeout_s = self.settings.false_interruption_timeout_ms / 1000
        if listener.pending_interrupt and at_s - listener.pending_since_s >= timeout_s:
            log.info("%s: talked over the character for %.1f s", frame.session_id, timeout_s)
            await self._interrupt(frame.session_id, listener)  # too long for a backchannel
        for event in events:
            if isinstance(event, SpeechStarted):
                event = await self._open_utterance(frame.session_id, listener, event)
            with trace.use_span(listener.span):
                await self._on_event(frame.session_id, listener, event, frame)
        if not listener.endpointer.in_speech:
            # Nothing open needs these frames any more, but the latest make the pre-roll
            # of the next utterance.
            keep = 0 if frame.end_of_input else self._preroll_frames(listener, frame)
            self.bus.release(frame.session_id, keep_last=keep)
            if listener.turn_id:
                self.utterances.forget(frame.session_id)
                listener.turn_id = ""
        if frame.end_of_input:
            self.listeners.pop(frame.session_id)

    def _without_echo(self, frame: AudioFrame) -> bytes:
        """The frame with the character's voice taken out, when the microphone hears it
        (echo_cancellation; services.asr.echo_path), so the VAD, the barge-in gate and
        the transcript hear the user alone."""
        if self.echoes is None:
            return frame.pcm
        barge_in = self.barge_ins[frame.session_id]
        pcm, cancelled = self.echoes[frame.session_id].process(
            frame.pcm, frame.captured_at, user_talking=barge_in.holding
        )
        barge_in.hear_cancelled(cancelled)
        return pcm

    def _preroll_frames(self, listener: SessionListener, frame: AudioFrame) -> int:
        kept_ms = listener.endpointer.kept_chunks * listener.endpointer.vad.chunk_ms
        return -(-kept_ms // max(1, frame.duration_ms)) + 1

    async def _on_barge_in(
        self, session: str, listener: SessionListener, event: BargeInEvent
    ) -> None:
        command: Pause | Interrupt
        if isinstance(event, Hold):
            command = Pause(target_turn_id=event.turn_id)
        elif isinstance(event, Resume):
            command = Pause(target_turn_id=event.turn_id, paused=False)
            listener.backchannel = listener.endpointer.in_speech
        elif self.settings.resume_false_interruption:
            # Still paused; the words decide (_settle_interrupt), or the timeout does.
            listener.pending_interrupt, listener.pending_since_s = event.turn_id, listener.at_s
            listener.backchannel = listener.false_alarm = False
            return
        else:
            command = Interrupt(target_turn_id=event.turn_id)
            listener.backchannel = False
        await self._control(session, listener, event.turn_id, command)

    async def _settle_interrupt(self, session: str, listener: SessionListener, text: str) -> None:
        """The words of speech that paused the character for good: real words interrupt
        its turn; none, or only backchannels, let it go on where it paused, and the
        utterance is no turn (unless the user goes on talking)."""
        turn = listener.pending_interrupt
        if turn is None:
            return
        if text and not is_backchannel(text, self.backchannels):
            log.info("%s: words over the character (%r)", session, text[:40])
            await self._interrupt(session, listener)
            return
        listener.pending_interrupt = None
        listener.backchannel = listener.false_alarm = True
        self.barge_ins[session].forgive(turn)
        log.info("%s: false interruption (%r); turn %s goes on", session, text[:40], turn)
        listener.span.add_event("false_interruption", {"marionette.text": text[:80]})
        FALSE_INTERRUPTIONS.inc()
        await self._control(session, listener, turn, Pause(target_turn_id=turn, paused=False))

    def _backchannel_so_far(self, session: str, listener: SessionListener, text: str) -> bool:
        """Words over the character, not (yet) an interrupt, that are only a backchannel
        ("Mm-hmm" at a pause): no turn to prepare a reply for."""
        over = self.barge_ins[session].holding or listener.pending_interrupt is not None
        return over and is_backchannel(text, self.backchannels)

    async def _interrupt(self, session: str, listener: SessionListener) -> None:
        turn, listener.pending_interrupt = listener.pending_interrupt, None
        if turn is not None:
            listener.backchannel = listener.false_alarm = False
            await self._control(session, listener, turn, Interrupt(target_turn_id=turn))

    async def _control(
        self, session: str, listener: SessionListener, turn_id: str, command: Pause | Interrupt
    ) -> None:
        """A barge-in control, numbered in the capture run (a replay makes the same ids)."""
        log.info("%s: %s turn %s", session, _describe(command), turn_id)
        seq, listener.controls = listener.controls, listener.controls + 1
        await self.controls.publish(
            Control(
                session_id=session, turn_id=turn_id,
                message_id=f"{listener.capture_run}.barge:{seq}", seq=seq, command=command,
            )
        )  # fmt: skip

    async def _on_event(
        self, session: str, listener: SessionListener, event: Event, frame: AudioFrame
    ) -> None:
        if isinstance(event, SpeechStarted):
            await self._on_start(session, listener, event)
        elif isinstance(event, PartialDue):
            self._start_partial(session, listener, event.audio)
        elif isinstance(event, SpeculationCancelled):
            speculation, listener.speculation = listener.speculation, None
            if listener.false_alarm:  # "yeah... but why?": the whole utterance is judged again
                listener.backchannel = listener.false_alarm = False
            if speculation is not None and speculation.preempted:
                await self._supersede(session, listener, go_on=True)
        elif isinstance(event, SpeechEnded):
            listener.span.add_event("speech_end", timestamp=listener.wall_ns(event.speech_end_s))
            await self.speech_events.publish(
                SpeechEvent(
                    session_id=session, turn_id=listener.turn_id, seq=1,
                    state="end", at_s=event.speech_end_s,
                )
            )  # fmt: skip
        elif event.endpoint:
            await self._finish(session, listener, event, frame)
        else:
            self._speculate(session, listener, event)

    async def _open_utterance(
        self, session: str, listener: SessionListener, event: SpeechStarted
    ) -> SpeechStarted:
        """Name the utterance's turn; returns the start as it was first heard."""
        left = await self.utterances.load(session)
        if (
            left is not None
            and left.capture_run == listener.capture_run
            and abs(left.utterance_start_s - event.utterance_start_s) <= SAME_UTTERANCE_S
        ):
            listener.turn_id = left.turn_id  # heard again after a crash
            event = SpeechStarted(left.utterance_start_s, left.speech_start_s)
            listener.utterance_start_ms = round(left.utterance_start_s * 1000)
        else:
            # Derived from the capture run and its audio timeline, so a replay of the same
            # frames gets the same turn ids, and a new capture run new ones.
            listener.utterance_start_ms = round(event.utterance_start_s * 1000)
            listener.turn_id = utterance_turn_id(listener.capture_run, listener.utterance_start_ms)
            self.utterances.save(
                session, "", OpenUtterance(
                    capture_run=listener.capture_run, turn_id=listener.turn_id,
                    utterance_start_s=event.utterance_start_s,
                    speech_start_s=event.speech_start_s,
                ),
            )  # fmt: skip
        listener.attempt = 0
        listener.span.end()  # an utterance that never reached its final (no-op when none)
        listener.span = self._turn_span(session, listener, event.speech_start_s)
        return event

    def _turn_span(self, session: str, listener: SessionListener, start_s: float) -> trace.Span:
        return tracer.start_span(
            "asr.utterance",
            context=Context(),  # a new trace: one per turn
            start_time=listener.wall_ns(start_s),
            attributes=turn_attributes(session, listener.turn_id),
        )

    async def _on_start(
        self, session: str, listener: SessionListener, event: SpeechStarted
    ) -> None:
        listener.speech_start_s = event.speech_start_s
        listener.backchannel = False
        listener.partial_seq = 0
        listener.final_started = False
        listener.speculation = None
        await self.speech_events.publish(
            SpeechEvent(
                session_id=session, turn_id=listener.turn_id, seq=0,
                state="start", at_s=event.speech_start_s,
            )
        )  # fmt: skip

    def _speculate(self, session: str, listener: SessionListener, event: FinalReady) -> None:
        """At a pause: the transcript, then whether the turn sounds finished; when it does,
        the transcript goes out now (preemptive) and the end of turn comes sooner."""

        def wanted() -> bool:
            return listener.speculation is speculation

        async def think_ahead() -> Transcript | None:
            # The model hears the audio while Whisper reads it (one thread beside its two):
            # the decision is there as soon as the words are.
            probability = asyncio.ensure_future(self._turn_probability(event.audio))
            transcript = await self._transcribe(event.audio, wanted)
            if transcript is None or not wanted():
                probability.cancel()
                return transcript
            await self._settle_interrupt(session, listener, transcript.text)
            verdict = self._judge(await probability, transcript.text)
            if not wanted():
                return transcript
            if verdict is not None:
                finished = verdict.complete
                listener.endpointer.end_after(
                    self.settings.finished_silence_ms
                    if finished
                    else self.settings.unfinished_silence_ms
                )
                END_OF_TURN.labels("finished" if finished else "unfinished").inc()
                listener.span.add_event(
                    "end_of_turn",
                    {"finished": finished, "probability": round(verdict.probability, 3),
                     "reason": verdict.reason},
                )  # fmt: skip
            if (
                self.settings.preemptive
                and not listener.final_started  # at the end of turn already: a plain final
                and (verdict is None or verdict.complete)
                and transcript.text
                and not listener.backchannel
                and not self._backchannel_so_far(session, listener, transcript.text)
            ):
                speculation.preempted = True  # before the await: a resumed speech sees it
                with trace.use_span(listener.span):
                    await self._publish_transcript(
                        session, listener, event, transcript, preemptive=True
                    )
            return transcript

        task = asyncio.create_task(think_ahead())
        speculation = Speculation(event, task)
        listener.speculation = speculation
        self._background(task)

    async def _turn_probability(self, pcm: bytes) -> float | None:
        if self.turn_model is None:
            return None
        return await asyncio.to_thread(self.turn_model.probability, pcm)

    def _judge(self, probability: float | None, text: str) -> TurnVerdict | None:
        """Whether the turn sounds finished (None: end_of_turn is "silence")."""
        return None if probability is None else self.judge.judge(probability, text)

    async def _supersede(self, session: str, listener: SessionListener, *, go_on: bool) -> None:
        """Drop the preemptive turn: its reply is no longer wanted (an Interrupt, reason
        "superseded": memory forgets it). go_on: the user is still talking, and the
        utterance continues as the next attempt's turn."""
        dropped = listener.turn_id
        PREEMPTIVE_TURNS.labels("superseded").inc()
        log.info("%s/%s: the user went on; dropping the reply prepared for it", session, dropped)
        listener.span.add_event("superseded")
        await self.controls.publish(
            Control(
                session_id=session, turn_id=dropped, message_id=f"{dropped}.superseded:0",
                seq=0, command=Interrupt(target_turn_id=dropped, reason=SUPERSEDED),
            )
        )  # fmt: skip
        if not go_on:
            return
        listener.attempt += 1
        listener.turn_id = utterance_turn_id(
            listener.capture_run, listener.utterance_start_ms, listener.attempt
        )
        listener.partial_seq = 0
        listener.span.end()
        listener.span = self._turn_span(session, listener, listener.speech_start_s)
        # The floor is the new turn's: playback waits for its end, not the dropped one's.
        await self.speech_events.publish(
            SpeechEvent(
                session_id=session, turn_id=listener.turn_id, seq=0,
                state="start", at_s=listener.speech_start_s,
            )
        )  # fmt: skip

    def _start_partial(self, session: str, listener: SessionListener, audio: bytes) -> None:
        if self._recognizer_turn.locked():
            return  # busy: by the time it ran, this partial would be stale
        turn_id = listener.turn_id

        def wanted() -> bool:
            # A pause's transcript (the speculation) goes first: a partial then is stale.
            return (
                not listener.final_started
                and listener.turn_id == turn_id
                and listener.speculation is None
            )

        async def run() -> None:
            transcript = await self._transcribe(audio, wanted)
            if transcript is None or not transcript.text or not wanted():
                return
            await self.partials.publish(
                AsrPartial(
                    session_id=session, turn_id=turn_id, seq=listener.partial_seq,
                    text=transcript.text[:4000], speech_start_s=listener.speech_start_s,
                )
            )  # fmt: skip
            listener.partial_seq += 1

        self._background(asyncio.create_task(run()))

    async def _finish(
        self, session: str, listener: SessionListener, event: FinalReady, frame: AudioFrame
    ) -> None:
        listener.span.add_event("endpoint")
        try:
            await self._publish_final(session, listener, event, frame)
        finally:
            listener.span.end()
            listener.span = trace.INVALID_SPAN

    async def _publish_final(
        self, session: str, listener: SessionListener, event: FinalReady, frame: AudioFrame
    ) -> None:
        listener.final_started = True
        speculation, listener.speculation = listener.speculation, None
        transcript = None
        if speculation is not None and speculation.audio == event.audio:
            listener.speculation = speculation  # still wanted, if it has not started yet
            transcript = await speculation.task
            listener.speculation = None
        # Its frames are acknowledged in the same write as the final (or, after a
        # preemptive final, as the end of turn): after a crash they are neither lost nor
        # heard (and answered) again.
        keep = 0 if frame.end_of_input else self._preroll_frames(listener, frame)
        if speculation is not None and speculation.preempted:
            self.bus.release(session, keep_last=keep)
            self.utterances.forget(session)
            if listener.backchannel:  # it only talked over the character after all
                await self._supersede(session, listener, go_on=False)
            else:
                PREEMPTIVE_TURNS.labels("confirmed").inc()
            return
        if transcript is None:
            transcript = await self._transcribe(event.audio)
        assert transcript is not None
        await self._settle_interrupt(session, listener, transcript.text)
        listener.span.set_attribute("marionette.text", transcript.text[:200])
        if listener.backchannel:
            log.info("%s/%s: only talked over the character briefly (%r); not a turn",
                     session, listener.turn_id, transcript.text[:80])  # fmt: skip
            return
        if not transcript.text:
            log.info("%s/%s: no words in that utterance", session, listener.turn_id)
            return
        self.bus.release(session, keep_last=keep)
        self.utterances.forget(session)
        await self._publish_transcript(session, listener, event, transcript, preemptive=False)

    async def _publish_transcript(
        self,
        session: str,
        listener: SessionListener,
        event: FinalReady,
        transcript: Transcript,
        *,
        preemptive: bool,
    ) -> None:
        listener.span.set_attribute("marionette.text", transcript.text[:200])
        await self.finals.publish(
            AsrFinal(
                session_id=session, turn_id=listener.turn_id, seq=0,
                text=transcript.text[:4000], language=transcript.language,
                confidence=transcript.confidence,
                # The start as first heard (a replica hearing it again after a crash may
                # hear it a frame later), so a copy of a preemptive final is the same.
                speech_start_s=listener.speech_start_s, speech_end_s=event.speech_end_s,
                speech_end_at=_wall_time(listener.wall_ns(event.speech_end_s)),
                preemptive=preemptive,
            )
        )  # fmt: skip
        ASR_FINAL_LATENCY.observe(time.time() - listener.wall_ns(event.speech_end_s) / 1e9)


def _describe(command: Pause | Interrupt) -> str:
    if isinstance(command, Interrupt):
        return "interrupt"
    return "hold" if command.paused else "resume"


def warm_up(recognizer: SpeechRecognizer, turn_model: TurnModel | None) -> None:
    """Run each model once on a second of quiet noise: their first run allocates and
    tunes (the first turn after start took 8.6 s before this)."""
    noise = np.random.default_rng(0).normal(0, 30, AUDIO_SAMPLE_RATE).astype("<i2").tobytes()
    recognizer.transcribe(noise)
    if turn_model is not None:
        turn_model.probability(noise)


def _wall_time(ns: int) -> float | None:
    """Unix seconds, or None when frames carried no capture time (a test's zero clock)."""
    return round(ns / 1e9, 3) if ns > 0 else None
