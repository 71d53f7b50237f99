"""asr settings: MARIONETTE_ASR_* environment variables (or [asr] keys in marionette.toml)."""

from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.asr.backchannel import DEFAULT_BACKCHANNELS
from services.settings import MarionetteSettings


class AsrSettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_ASR_")
    toml_table: ClassVar[str | None] = "asr"

    vad: Literal["webrtc", "silero"] = Field(
        default="webrtc", description="Voice activity detector."
    )
    vad_aggressiveness: int = Field(
        default=2, ge=0, le=3, description="webrtcvad: 0 lets most through, 3 is strictest."
    )
    vad_frame_ms: Literal[10, 20, 30] = Field(default=20, description="webrtcvad frame length.")
    silero_threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Silero: speech probability that counts as speech."
    )
    start_speech_ms: int = Field(
        default=90, ge=10, description="Voiced audio in a row that opens an utterance."
    )
    end_of_turn: Literal["smart-turn", "silence"] = Field(
        default="smart-turn",
        description="How asr decides the user has finished: 'smart-turn' hears it (Smart Turn "
        "v3.2 on the audio, with the transcript's last word) and waits finished_silence_ms or "
        "unfinished_silence_ms; 'silence' waits end_silence_ms after any speech.",
    )
    finished_silence_ms: int = Field(
        default=500, ge=100, le=5000,
        description="smart-turn: silence that ends a turn that sounds finished. The reply is "
        "prepared meanwhile (preemptive), so this wait is mostly hidden.",
    )  # fmt: skip
    unfinished_silence_ms: int = Field(
        default=1500, ge=100, le=10000,
        description="smart-turn: silence that ends a turn that sounds unfinished (a pause "
        "after 'because', a trailing 'um').",
    )  # fmt: skip
    end_silence_ms: int = Field(
        default=600, ge=100, description="silence: silence that ends an utterance."
    )
    turn_threshold: float = Field(
        default=0.5, gt=0, lt=1,
        description="smart-turn: the model's probability at or above which a turn is finished.",
    )  # fmt: skip
    preemptive: bool = Field(
        default=True,
        description="Publish the transcript as soon as the turn sounds finished, before the "
        "end of turn is certain, so the reply is ready by then (playback holds it until the "
        "end); if the user goes on, that reply is dropped and the turn starts again.",
    )
    preroll_ms: int = Field(default=300, ge=0, description="Audio kept from before speech started.")
    min_speech_ms: int = Field(
        default=250, ge=0, description="Shorter utterances (a click, a cough) are ignored."
    )
    max_utterance_s: float = Field(
        default=30.0, gt=1, le=60, description="An utterance this long is cut and transcribed."
    )
    partial_interval_ms: int = Field(
        default=1000, ge=200, description="New speech between two interim transcripts."
    )
    speculate_after_ms: int = Field(
        default=100,
        ge=0,
        description="Silence after which the final transcript (and the end-of-turn decision) "
        "starts, before the end of turn.",
    )
    barge_in: bool = Field(
        default=True, description="Let the user talk over the character to interrupt it."
    )
    barge_in_onset_ms: int = Field(
        default=40, ge=10, le=1000,
        description="Speech over the character that pauses it (it goes quiet at once).",
    )  # fmt: skip
    barge_in_min_speech_ms: int = Field(
        default=500, ge=0, le=5000,
        description="Speech over the character that interrupts its turn; a cough or an "
        "'uh-huh' is shorter, and the character goes on.",
    )  # fmt: skip
    barge_in_resume_ms: int = Field(
        default=300, ge=20, le=5000,
        description="Quiet after a pause that lets the character go on (the speech was short).",
    )  # fmt: skip
    resume_false_interruption: bool = Field(
        default=True,
        description="Speech over the character long enough to interrupt it pauses it "
        "until its words are known: with none (a laugh, a cough, noise), or only "
        "backchannels, the character goes on where it paused instead.",
    )
    false_interruption_timeout_ms: int = Field(
        default=2000, ge=100, le=10000,
        description="Speech over the character this long interrupts it without waiting "
        "for the words (nobody backchannels for two seconds).",
    )  # fmt: skip
    backchannels: str = Field(
        default=DEFAULT_BACKCHANNELS,
        description="Comma-separated words and phrases that, said alone over the "
        "character, never interrupt it ('yeah', 'uh-huh', 'mm'); empty: any words do.",
    )
    echo_coupling_db: float = Field(
        default=-10.0, ge=-80, le=20,
        description="How much quieter the character's voice is at the microphone than in "
        "its output, until asr has measured it (about a second of speaking).",
    )  # fmt: skip
    echo_margin_db: float = Field(
        default=6.0, ge=0, le=40,
        description="How much louder than the character's echo the user must be to count.",
    )  # fmt: skip
    echo_tail_ms: int = Field(
        default=300, ge=0, le=3000,
        description="After the character stops, its voice may still reach the microphone "
        "(output latency, the room) for this long.",
    )  # fmt: skip
    barge_in_min_dbfs: float = Field(
        default=-50.0, ge=-120, le=0,
        description="Over the character, quieter audio is never the user's speech.",
    )  # fmt: skip
    echo_cancellation: bool = Field(
        default=False,
        description="Take the character's own voice out of the microphone (WebRTC AEC3, "
        "pywebrtc-audio) before the VAD, the barge-in gate and the transcript, with what "
        "playback plays (tts.chunk, playback.progress) as the reference: the user can "
        "interrupt a character as loud as they are. For speakers and a desk microphone; "
        "its output is used only once the microphone is found to hear the character and "
        "the canceller takes 12 dB out. asr's and playback's clocks must agree (one host, "
        "or NTP), and playback must report before the sound comes out.",
    )
    echo_output_delay_ms: int = Field(
        default=0, ge=0, le=1000,
        description="echo_cancellation: the least time from playback's report to the "
        "speakers (its output buffer). The canceller finds up to ~400 ms more itself; set "
        "above the real delay, the echo comes before its reference and stays.",
    )  # fmt: skip
    echo_cancelled_coupling_db: float = Field(
        default=-30.0, ge=-80, le=20,
        description="echo_cancellation: the least the barge-in gate assumes is left of the "
        "character's voice after the canceller (dB under its output); it learns more if "
        "more is left. Lower lets quieter users interrupt, but the canceller leaks while it "
        "adapts (the first seconds of a session).",
    )  # fmt: skip
    model: str = Field(
        default="tiny.en",
        description="faster-whisper model: tiny.en (bundled), a model directory, or a name.",
    )
    device: str = Field(default="cpu", description="cpu, cuda or auto.")
    compute_type: str = Field(default="int8", description="int8, int8_float16, float16...")
    cpu_threads: int = Field(default=2, ge=1, le=64, description="Threads for the CPU model.")
    short_window: bool = Field(
        default=False,
        description="Decode a clip under 20 s in a window just longer than itself, not "
        "Whisper's 30 s: ~200 ms sooner a question on two cores, but tiny.en then hears "
        "the sample's 'capital of France' as 'capital of friends'. For larger models.",
    )
    turn_model_threads: int = Field(
        default=1, ge=1, le=64, description="Threads for the end-of-turn model (it is small)."
    )
    beam_size: int = Field(default=1, ge=1, le=10, description="1 is greedy and fastest.")
    hotwords: str = Field(
        default="Marionette",
        description="Names Whisper should expect (tiny.en hears 'Marionette' as 'Mario and "
        "that' without); empty for none.",
    )
    language: str | None = Field(
        default="en", description="Spoken language; 'auto' lets a multilingual model detect it."
    )

    @field_validator("language", mode="before")
    @classmethod
    def _auto_language(cls, value: object) -> object:
        return None if value in ("", "auto") else value
