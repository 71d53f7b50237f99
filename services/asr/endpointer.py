"""Cutting a session's audio into utterances: when speech starts, when it has ended.

The Endpointer is pure logic, fed audio and answering with events (Wyoming-style small
dataclasses). The stage decides what to do with them: publish, transcribe.

How much silence ends an utterance is the stage's call once it has heard the pause
(`end_after`: short when the turn sounds finished, long when not); until then, and after
speech resumes, it is `default_end_ms`.
"""

import math
from collections import deque
from dataclasses import dataclass, field

from contracts.limits import AUDIO_SAMPLE_RATE, AUDIO_SAMPLE_WIDTH
from services.asr.settings import AsrSettings
from services.asr.vad import VoiceActivity, chunk_bytes

BYTES_PER_SECOND = AUDIO_SAMPLE_RATE * AUDIO_SAMPLE_WIDTH
TAIL_PAD_S = 0.1
"""Audio kept after the last voiced chunk: word endings are quiet."""


@dataclass(frozen=True)
class SpeechStarted:
    utterance_start_s: float
    """Where the utterance's audio (pre-roll included) starts, in the input timeline."""
    speech_start_s: float


@dataclass(frozen=True)
class PartialDue:
    """Enough new speech for an interim transcript."""

    audio: bytes


@dataclass(frozen=True)
class FinalReady:
    """The utterance's audio up to its last voiced chunk.

    Emitted speculatively when trailing silence begins (endpoint=False): the transcript can
    start then. Emitted again with endpoint=True when the silence is long enough; if the
    audio is unchanged, the speculative transcript is the final one.
    """

    audio: bytes
    speech_start_s: float
    speech_end_s: float
    endpoint: bool


@dataclass(frozen=True)
class SpeechEnded:
    """The endpoint: enough silence after speech. A FinalReady follows unless it was too short."""

    speech_end_s: float


@dataclass(frozen=True)
class SpeculationCancelled:
    """Speech resumed after a speculative FinalReady: that transcript is no longer wanted."""


Event = SpeechStarted | PartialDue | FinalReady | SpeechEnded | SpeculationCancelled


@dataclass
class _Utterance:
    start_s: float
    speech_start_s: float
    chunks: list[bytes] = field(default_factory=list)
    voiced_s: float = 0.0
    last_voiced_chunks: int = 0
    silence_s: float = 0.0
    since_partial_s: float = 0.0
    speculated: bool = False
    end_ms: int = 0  # the silence that ends it


class Endpointer:
    def __init__(
        self, settings: AsrSettings, vad: VoiceActivity, default_end_ms: int | None = None
    ) -> None:
        self.settings = settings
        self.vad = vad
        self.default_end_ms = default_end_ms or settings.end_silence_ms
        self._chunk_bytes = chunk_bytes(vad)
        self._chunk_s = vad.chunk_ms / 1000
        self._pending = b""
        self._pending_start_s = 0.0
        # The pre-roll before speech, plus the voiced run that proves it is speech.
        kept = math.ceil(settings.preroll_ms / vad.chunk_ms) + math.ceil(
            settings.start_speech_ms / vad.chunk_ms
        )
        self._preroll: deque[tuple[float, bytes, bool]] = deque(maxlen=max(1, kept))
        self._utterance: _Utterance | None = None

    @property
    def in_speech(self) -> bool:
        return self._utterance is not None

    def push(self, pcm: bytes, at_s: float) -> list[Event]:
        """Feed audio that starts at `at_s` in the input timeline."""
        if not self._pending:
            self._pending_start_s = at_s
        self._pending += pcm
        events: list[Event] = []
        while len(self._pending) >= self._chunk_bytes:
            chunk, self._pending = (
                self._pending[: self._chunk_bytes],
                self._pending[self._chunk_bytes :],
            )
            start_s = self._pending_start_s
            self._pending_start_s += self._chunk_s
            events += self._step(chunk, start_s, self.vad.is_speech(chunk))
        return events

    def finish(self) -> list[Event]:
        """The input ended: an utterance still open ends here, as at an endpoint."""
        u, self._utterance = self._utterance, None
        self._preroll.clear()
        if u is None:
            return []
        events: list[Event] = [SpeechEnded(u.start_s + u.last_voiced_chunks * self._chunk_s)]
        if u.voiced_s * 1000 >= self.settings.min_speech_ms:
            events.append(self._final(u, endpoint=True))
        return events

    def end_after(self, silence_ms: int) -> None:
        """The utterance ends after this much silence (from the pause it is in); speech
        that resumes first puts the default back. Takes effect with the next audio."""
        if self._utterance is not None and self._utterance.speculated:
            self._utterance.end_ms = silence_ms

    @property
    def kept_chunks(self) -> int:
        """How many chunks before an utterance it keeps as pre-roll (and start run)."""
        return self._preroll.maxlen or 0

    def _step(self, chunk: bytes, start_s: float, voiced: bool) -> list[Event]:
        if self._utterance is None:
            return self._listen(chunk, start_s, voiced)
        return self._follow(self._utterance, chunk, voiced)

    def _listen(self, chunk: bytes, start_s: float, voiced: bool) -> list[Event]:
        self._preroll.append((start_s, chunk, voiced))
        run = 0
        for _, _, was_voiced in reversed(self._preroll):
            if not was_voiced:
                break
            run += 1
        if run * self.vad.chunk_ms < self.settings.start_speech_ms:
            return []
        speech_start_s = self._preroll[-run][0]
        utterance = _Utterance(
            start_s=self._preroll[0][0], speech_start_s=speech_start_s, end_ms=self.default_end_ms
        )
        utterance.chunks = [c for _, c, _ in self._preroll]
        utterance.voiced_s = run * self._chunk_s
        utterance.last_voiced_chunks = len(utterance.chunks)
        utterance.since_partial_s = utterance.voiced_s
        self._preroll.clear()
        self._utterance = utterance
        return [SpeechStarted(utterance.start_s, speech_start_s)]

    def _follow(self, u: _Utterance, chunk: bytes, voiced: bool) -> list[Event]:
        u.chunks.append(chunk)
        events: list[Event] = []
        if voiced:
            u.voiced_s += self._chunk_s
            u.since_partial_s += self._chunk_s
            u.last_voiced_chunks = len(u.chunks)
            u.silence_s = 0.0
            u.end_ms = self.default_end_ms
            if u.speculated:
                u.speculated = False
                events.append(SpeculationCancelled())
        else:
            u.silence_s += self._chunk_s
        if u.since_partial_s * 1000 >= self.settings.partial_interval_ms:
            u.since_partial_s = 0.0
            events.append(PartialDue(b"".join(u.chunks)))
        too_long = len(u.chunks) * self._chunk_s >= self.settings.max_utterance_s
        # Rounded to the chunk: 0.15 s of 20 ms chunks sums to 0.1499...
        if round(u.silence_s * 1000) >= u.end_ms or too_long:
            self._utterance = None
            self._keep_as_preroll(u)
            events.append(SpeechEnded(u.start_s + u.last_voiced_chunks * self._chunk_s))
            if u.voiced_s * 1000 >= self.settings.min_speech_ms:
                events.append(self._final(u, endpoint=True))
        elif (
            not voiced
            and not u.speculated
            and round(u.silence_s * 1000) >= self.settings.speculate_after_ms
            and u.voiced_s * 1000 >= self.settings.min_speech_ms
        ):
            u.speculated = True
            events.append(self._final(u, endpoint=False))
        return events

    def _keep_as_preroll(self, u: _Utterance) -> None:
        """The silence that ended an utterance is the next one's pre-roll: after a long
        end-of-turn wait, a user who speaks again at once would otherwise lose the start
        of their first word (and tiny.en then mishears it)."""
        quiet = len(u.chunks) - u.last_voiced_chunks
        first = len(u.chunks) - min(quiet, self._preroll.maxlen or 0)
        for index in range(first, len(u.chunks)):
            self._preroll.append((u.start_s + index * self._chunk_s, u.chunks[index], False))

    def _final(self, u: _Utterance, *, endpoint: bool) -> FinalReady:
        tail = round(TAIL_PAD_S / self._chunk_s)
        kept = u.chunks[: u.last_voiced_chunks + tail]
        end_s = u.start_s + u.last_voiced_chunks * self._chunk_s
        return FinalReady(b"".join(kept), u.speech_start_s, end_s, endpoint)
