"""asr.speech, asr.partial and asr.final: asr -> policy, playback (barge-in) and observers."""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from contracts.envelope import Envelope
from contracts.limits import MAX_TRANSCRIPT_CHARS

Transcript = Annotated[str, StringConstraints(max_length=MAX_TRANSCRIPT_CHARS)]


class SpeechEvent(Envelope):
    """The user started speaking (voice activity, before any transcript), or finished their
    turn (the end of turn is certain: a reply may start playing)."""

    state: Literal["start", "end"]
    at_s: float = Field(ge=0, description="When, in the input timeline (s).")


class AsrPartial(Envelope):
    """An interim transcript while the user is still speaking."""

    text: Transcript
    speech_start_s: float = Field(ge=0, description="Speech start in the input timeline (s).")


class AsrFinal(Envelope):
    """The final transcript of one utterance; it opens a turn."""

    text: Transcript
    language: Annotated[str, StringConstraints(min_length=2, max_length=8)] = "en"
    confidence: float = Field(ge=0.0, le=1.0)
    speech_start_s: float = Field(ge=0, description="Speech start in the input timeline (s).")
    speech_end_s: float = Field(ge=0, description="Speech end in the input timeline (s).")
    speech_end_at: float | None = Field(
        default=None,
        ge=0,
        description="When the user stopped speaking, by the capture clock (Unix s): where "
        "voice-to-voice latency starts.",
    )
    preemptive: bool = Field(
        default=False,
        description="Sent before the end of the turn is certain, so the reply can be "
        "prepared: playback holds it until asr.speech 'end' for this turn. If the user goes "
        "on, an Interrupt (reason 'superseded') drops this turn and the utterance continues "
        "as a new one.",
    )

    @model_validator(mode="after")
    def _ordered_times(self) -> "AsrFinal":
        if self.speech_end_s < self.speech_start_s:
            raise ValueError(
                f"speech ends ({self.speech_end_s} s) before it starts ({self.speech_start_s} s)"
            )
        return self
