"""tts.chunk: tts -> playback, avatar."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.envelope import Envelope
from contracts.limits import (
    AUDIO_SAMPLE_WIDTH,
    MAX_ALIGNMENTS,
    MAX_EXPRESSIONS,
    MAX_REPLY_CHARS,
    MAX_TTS_CHUNK_BYTES,
    TTS_SAMPLE_RATES,
)
from contracts.pcm import PcmBytes
from contracts.policy import ExpressionTag


class PhonemeTiming(BaseModel):
    """One phoneme (or viseme) and where it sits in the chunk's audio."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phoneme: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    start_sample: int = Field(ge=0)
    num_samples: int = Field(ge=0)


class TtsChunk(Envelope):
    """The PCM of one sentence or clause of the reply, with its text and timings."""

    index: int = Field(ge=0, description="Position of this chunk in the reply.")
    final: bool = Field(default=False, description="The last chunk of the turn.")
    text: Annotated[str, StringConstraints(max_length=MAX_REPLY_CHARS)]
    sample_rate: int
    pcm: PcmBytes = Field(max_length=MAX_TTS_CHUNK_BYTES)
    alignments: list[PhonemeTiming] = Field(default_factory=list, max_length=MAX_ALIGNMENTS)
    expressions: list[ExpressionTag] = Field(default_factory=list, max_length=MAX_EXPRESSIONS)

    @model_validator(mode="after")
    def _check_audio(self) -> "TtsChunk":
        if self.sample_rate not in TTS_SAMPLE_RATES:
            raise ValueError(
                f"wrong sample rate {self.sample_rate} Hz: tts.chunk takes one of "
                f"{', '.join(map(str, TTS_SAMPLE_RATES))}"
            )
        if len(self.pcm) % AUDIO_SAMPLE_WIDTH:
            raise ValueError(f"PCM of {len(self.pcm)} bytes is not whole s16le samples")
        return self

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (AUDIO_SAMPLE_WIDTH * self.sample_rate)


class PlaybackProgress(Envelope):
    """How far playback has got in a turn's audio (barge-in needs to know what was heard)."""

    chunk_index: int = Field(ge=0, description="The tts.chunk being played.")
    played_s: float = Field(ge=0, description="Audio of this turn played so far (s).")
    state: Literal["playing", "paused", "finished", "flushed"] = Field(
        description="flushed: stopped for good by an interrupt; paused: held by a pause."
    )
    level_dbfs: float | None = Field(
        default=None,
        ge=-120,
        le=0,
        description="While playing: the loudest 20 ms of the chunk (RMS, dBFS), so asr can "
        "tell the character's own voice at the microphone from the user's.",
    )
    heard_text: Annotated[str, StringConstraints(max_length=MAX_REPLY_CHARS)] | None = Field(
        default=None, description="When flushed: the reply's text up to where it stopped."
    )
    remaining_s: float | None = Field(
        default=None,
        ge=0,
        description="When playing: how much of the chunk is still to play from now (s). After "
        "it the character is silent, unless another report says it plays on.",
    )
