"""audio.frame: capture -> asr."""

from typing import Any, Literal

from pydantic import Field, model_validator

from contracts.envelope import Envelope
from contracts.limits import (
    AUDIO_CHANNELS,
    AUDIO_FRAME_BYTES,
    AUDIO_FRAME_MS,
    AUDIO_SAMPLE_RATE,
    AUDIO_SAMPLE_WIDTH,
    MAX_AUDIO_FRAME_BYTES,
)
from contracts.pcm import PcmBytes


class AudioFrame(Envelope):
    """10, 20 or 30 ms of 16 kHz mono s16le microphone audio.

    A frame belongs to no turn yet: its origin is the capture run (message_id
    "<run>:<seq>"), and seq x frame length is where it sits in that run's audio.
    """

    sample_rate: int = Field(default=AUDIO_SAMPLE_RATE, description="Always 16000 Hz.")
    channels: int = Field(default=AUDIO_CHANNELS, description="Always 1 (mono).")
    sample_format: Literal["s16le"] = "s16le"
    pcm: PcmBytes = Field(max_length=MAX_AUDIO_FRAME_BYTES)
    captured_at: float = Field(ge=0, description="Capture time of the first sample (Unix s).")
    end_of_input: bool = Field(
        default=False, description="The last frame of its input (a file ended, capture stopped)."
    )

    @classmethod
    def upgrade_previous(cls, data: dict[str, Any]) -> dict[str, Any]:
        # Version 2 frames carried their capture run as turn_id.
        data = super().upgrade_previous(data)
        data["turn_id"] = None
        return data

    @model_validator(mode="after")
    def _check_format(self) -> "AudioFrame":
        if self.sample_rate != AUDIO_SAMPLE_RATE:
            raise ValueError(
                f"wrong sample rate {self.sample_rate} Hz: audio.frame carries "
                f"{AUDIO_SAMPLE_RATE} Hz; resample in the capture stage"
            )
        if self.channels != AUDIO_CHANNELS:
            raise ValueError(f"{self.channels} channels: audio.frame carries mono audio")
        if len(self.pcm) not in AUDIO_FRAME_BYTES:
            raise ValueError(
                f"frame of {len(self.pcm)} bytes: audio.frame takes "
                f"{'/'.join(map(str, AUDIO_FRAME_MS))} ms of 16 kHz mono s16le "
                f"({'/'.join(map(str, AUDIO_FRAME_BYTES))} bytes)"
            )
        return self

    @property
    def duration_ms(self) -> int:
        return len(self.pcm) * 1000 // (AUDIO_SAMPLE_RATE * AUDIO_SAMPLE_WIDTH)
