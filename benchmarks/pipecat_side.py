"""The pipecat 1.14 half of benchmarks.vs_pipecat: one voice pipeline per configuration.

    Mic -> WhisperSTTService -> tap -> user aggregator (Silero VAD, turn strategy) -> tap
        -> OpenAILLMService (llama_cpp.server) -> tap -> PiperTTSService -> Sink
        -> assistant aggregator

Mic stands in for a transport's input: it pushes InputAudioRawFrames of 20 ms in real
time, the question and then silence until the reply is synthesized. The taps and the
sink are pass-through processors that note when frames of interest go by; a turn is
timed from those notes. The VAD lives in the user aggregator, as pipecat 1.x builds it
(its CLI templates: LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())), and the
aggregator broadcasts the VAD frames upstream to the segmented Whisper service.

Nothing is downloaded: Whisper loads the bundled tiny.en directory, Piper the bundled
voice file (PiperTTSService looks for `{download_dir}/{voice}.onnx` and downloads only
when it is missing), Silero and Smart Turn v3.2 come inside pipecat's wheel.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.turns.user_stop import (
    SpeechTimeoutUserTurnStopStrategy,
    TurnAnalyzerUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.text.transforms.replacements import replace_text
from pipecat.workers.runner import WorkerRunner

from contracts.limits import AUDIO_SAMPLE_RATE
from services.bench.utterances import FRAME_BYTES, FRAME_S, Utterance
from services.models.bundled import piper_voice_paths, whisper_model_dir

PARTS = (
    "VAD stop",  # end of speech -> VADUserStoppedSpeakingFrame
    "STT transcript",  # -> Whisper's TranscriptionFrame
    "turn confirmed",  # -> UserStoppedSpeakingFrame (the stop strategy's verdict)
    "LLM first token",  # -> first LLMTextFrame
    "first sentence",  # -> the TTS hands its first sentence to Piper (on_tts_request)
    "TTS first audio",  # -> first TTSAudioRawFrame at the end of the pipeline
)
"""Consecutive spans from the end of speech to the first reply audio; they add up."""
REPLY_TIMEOUT_S = 60.0
"""After the end of speech; a reply not synthesized by then fails the turn."""
EMOTION_TAG = r"\[[a-z_]{1,32}\]\s*"
"""The persona asks for a leading [happy]-style tag; Marionette's policy strips it from the
spoken text, so pipecat's TTS drops it too (a text transform, as pipecat intends)."""


@dataclass(frozen=True)
class PipecatConfig:
    name: str
    vad_stop_s: float
    smart_turn: bool


CONFIGS = (
    # The turn ends when Silero has heard 0.6 s of silence and Whisper has the text: the
    # silence Marionette's plain end of turn waits (MARIONETTE_ASR_END_OF_TURN=silence).
    PipecatConfig("pipecat vad 0.6 s", vad_stop_s=0.6, smart_turn=False),
    # pipecat 1.14's default stop strategy, Smart Turn v3 after a 0.2 s VAD stop (its
    # recommended stop_secs; an unfinished verdict waits up to 3 s of silence).
    PipecatConfig("pipecat smart turn", vad_stop_s=0.2, smart_turn=True),
)


@dataclass
class PipecatTurn:
    text: str
    heard: str = ""
    parts: dict[str, float] = field(default_factory=dict)
    early_turn_stops: int = 0  # turns pipecat closed before the question was over
    thrown_away_replies: int = 0  # replies begun before the one that answered
    error: str = ""


@dataclass
class Notes:
    """What the taps saw during one turn: (what, monotonic time, detail). The detail is
    the text of a transcript, the TTS context of a request or of audio."""

    seen: list[tuple[str, float, str]] = field(default_factory=list)

    def note(self, what: str, detail: str = "") -> None:
        self.seen.append((what, time.monotonic(), detail))

    def times(self, what: str) -> list[float]:
        return [t for kind, t, _ in self.seen if kind == what]


class Mic(FrameProcessor):
    """A transport's input without the transport: 20 ms frames in real time."""

    def __init__(self) -> None:
        super().__init__(name="mic")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

    async def speak(
        self, pcm: bytes, pushed: list[float], finished: Callable[[], bool], timeout_s: float
    ) -> None:
        """The utterance, then silence until finished() (or timeout_s after the utterance);
        appends to `pushed` when each frame was pushed (time.monotonic())."""
        pcm += b"\0" * (-len(pcm) % FRAME_BYTES)
        frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        silence = b"\0" * FRAME_BYTES
        started = time.monotonic()
        deadline = started + len(frames) * FRAME_S + timeout_s
        # The same schedule as services.bench.live.Microphone: frame n at start + n * 20 ms.
        while len(pushed) < len(frames) or not (finished() or time.monotonic() > deadline):
            seq = len(pushed)
            await asyncio.sleep(max(0.0, started + seq * FRAME_S - time.monotonic()))
            audio = frames[seq] if seq < len(frames) else silence
            pushed.append(time.monotonic())
            await self.push_frame(InputAudioRawFrame(audio, AUDIO_SAMPLE_RATE, 1))


class Tap(FrameProcessor):
    """Passes every frame on; calls `seen` for each one going downstream."""

    def __init__(self, name: str, seen: Callable[[Frame], None]) -> None:
        super().__init__(name=name)
        self.seen = seen

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.seen(frame)
        await self.push_frame(frame, direction)


class PipecatVoice:
    """One configuration's pipeline, running in this event loop until close()."""

    def __init__(
        self, config: PipecatConfig, llm_url: str, llm_model: str, prompt: list[dict[str, str]],
        max_tokens: int, temperature: float,
    ) -> None:  # fmt: skip
        self.config = config
        self.notes = Notes()
        self.mic = Mic()
        self.ready = asyncio.Event()
        stop = (
            TurnAnalyzerUserTurnStopStrategy(turn_analyzer=LocalSmartTurnAnalyzerV3())
            if config.smart_turn
            else SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)
        )
        # pipecat 1.9+ takes the system prompt as the LLM service's system_instruction; the
        # context keeps the conversation (here the persona's few-shot turns, then the question).
        self.system, self.few_shot = prompt[0]["content"], prompt[1:]
        self.context = LLMContext(messages=list(self.few_shot))  # type: ignore[arg-type]
        user, assistant = LLMContextAggregatorPair(
            self.context,
            user_params=LLMUserAggregatorParams(
                vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=config.vad_stop_s)),
                user_turn_strategies=UserTurnStrategies(stop=[stop]),
            ),
        )
        stt = WhisperSTTService(
            device="cpu", compute_type="int8",
            settings=WhisperSTTService.Settings(model=str(whisper_model_dir("tiny.en"))),
        )  # fmt: skip
        llm = OpenAILLMService(
            api_key="not-needed", base_url=llm_url,
            settings=OpenAILLMService.Settings(
                model=llm_model, system_instruction=self.system, max_tokens=max_tokens,
                temperature=temperature,
            ),
        )  # fmt: skip
        model_path, _ = piper_voice_paths("joe-us")
        tts = PiperTTSService(
            download_dir=model_path.parent,
            settings=PiperTTSService.Settings(voice=model_path.stem),
            text_transforms=[("*", replace_text([(EMOTION_TAG, "")]))],
        )
        tts.add_event_handler(
            "on_tts_request", lambda _, context, text: self.notes.note("tts request", context)
        )
        pipeline = Pipeline(
            [
                self.mic, stt, Tap("after-stt", self._after_stt), user,
                Tap("after-user", self._after_user), llm, Tap("after-llm", self._after_llm),
                tts, Tap("sink", self._at_sink), assistant,
            ]
        )  # fmt: skip
        self.task = PipelineTask(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=AUDIO_SAMPLE_RATE,
                # Piper's own rate: no resampling before the first audio.
                audio_out_sample_rate=22_050,
            ),
            idle_timeout_secs=None,  # it idles while the other systems take their turns
            enable_rtvi=False,  # no client to talk to
        )
        self.runner = WorkerRunner(handle_sigint=False)
        self._running: asyncio.Task[None] | None = None

    def _after_stt(self, frame: Frame) -> None:
        if isinstance(frame, TranscriptionFrame):
            self.notes.note("transcript", frame.text)

    def _after_user(self, frame: Frame) -> None:
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self.notes.note("vad stop")
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self.notes.note("turn stop")

    def _after_llm(self, frame: Frame) -> None:
        if isinstance(frame, LLMTextFrame):
            self.notes.note("llm text")
        elif isinstance(frame, LLMFullResponseStartFrame):
            self.notes.note("llm start")

    def _at_sink(self, frame: Frame) -> None:
        if isinstance(frame, StartFrame):
            self.ready.set()
        elif isinstance(frame, TTSAudioRawFrame):
            self.notes.note("audio", frame.context_id or "")
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.notes.note("llm end")
        elif isinstance(frame, TTSStoppedFrame):
            self.notes.note("tts stopped")

    async def start(self) -> None:
        await self.runner.add_workers(self.task)
        self._running = asyncio.create_task(self.runner.run())
        await asyncio.wait_for(self.ready.wait(), timeout=120)

    async def close(self) -> None:
        """Cancel the pipeline: nothing in it is worth finishing, and an EndFrame would
        wait behind a turn cut short."""
        if self._running is None:
            return
        await self.task.cancel()
        try:
            await asyncio.wait_for(self._running, timeout=10)
        except TimeoutError:
            logger.warning("pipecat's runner did not end in 10 s; leaving it")

    async def turn(self, utterance: Utterance) -> PipecatTurn:
        """Speak one question into a fresh conversation and time the reply."""
        self.context.set_messages(list(self.few_shot))  # type: ignore[arg-type]
        notes = self.notes = Notes()
        pushed: list[float] = []

        def finished() -> bool:
            """The reply to the question is synthesized: its LLM response has ended and the
            TTS has stopped since it began."""
            speech_end_at = speech_end(utterance, pushed)
            reply = None if speech_end_at is None else final_reply(notes, speech_end_at)
            return reply is not None and all(
                any(t > reply[1] for t in notes.times(what)) for what in ("llm end", "tts stopped")
            )

        await self.mic.speak(utterance.pcm, pushed, finished, REPLY_TIMEOUT_S)
        return timed(utterance, pushed, notes)


def speech_end(utterance: Utterance, pushed: list[float]) -> float | None:
    """When the question's speech ended, like services.bench.live places it: when the frame
    holding its last sample was pushed, less the samples after it in that frame; None until
    that frame is pushed."""
    samples_per_frame = FRAME_BYTES // 2
    end = utterance.speech_end_sample
    if len(pushed) <= end // samples_per_frame:
        return None
    after = samples_per_frame - end % samples_per_frame
    return pushed[end // samples_per_frame] - after / AUDIO_SAMPLE_RATE


def final_reply(notes: Notes, speech_end_at: float) -> tuple[float, float] | None:
    """(turn stop, LLM response start) of the reply that answers the whole question: the
    last turn pipecat ended after the end of speech, and the first response after it. An
    earlier turn end (a pause taken for the end, or a transcript that came late) starts a
    reply that the next turn's interruption throws away."""
    stops = [t for t in notes.times("turn stop") if t >= speech_end_at]
    if not stops:
        return None
    start = next((t for t in notes.times("llm start") if t > stops[-1]), None)
    return None if start is None else (stops[-1], start)


def timed(utterance: Utterance, pushed: list[float], notes: Notes) -> PipecatTurn:
    """The turn's parts from what the taps saw."""
    result = PipecatTurn(utterance.text)
    speech_end_at = speech_end(utterance, pushed)
    if speech_end_at is None:
        result.error = "the question was not played to its end"
        return result
    result.early_turn_stops = sum(t < speech_end_at for t in notes.times("turn stop"))
    reply = final_reply(notes, speech_end_at)
    if reply is None:
        result.error = "pipecat never answered after the question"
        return result
    turn_stop, llm_start = reply
    result.thrown_away_replies = sum(t < llm_start for t in notes.times("llm start"))
    token = next((t for t in notes.times("llm text") if t > llm_start), None)
    # The reply's audio is the audio of its TTS context: a reply being thrown away may
    # still have a sentence on its way through the TTS.
    request = next(((t, c) for w, t, c in notes.seen if w == "tts request" and t > llm_start), None)
    audio = None
    if request is not None:
        sent_at, context = request
        audio = next((t for w, t, c in notes.seen if w == "audio" and c == context), None)
    if token is None or request is None or audio is None:
        result.error = "the reply had no tokens or no audio"
        return result
    vad_stop = max((t for t in notes.times("vad stop") if t <= turn_stop), default=turn_stop)
    transcripts = [(t, text) for kind, t, text in notes.seen if kind == "transcript"]
    heard_at = max((t for t, _ in transcripts if t <= turn_stop), default=vad_stop)
    result.heard = " ".join(text.strip() for t, text in transcripts if t <= turn_stop)
    bounds = (speech_end_at, vad_stop, heard_at, turn_stop, token, sent_at, audio)
    result.parts = {part: bounds[i + 1] - bounds[i] for i, part in enumerate(PARTS)}
    result.parts["voice-to-voice"] = audio - speech_end_at
    return result
