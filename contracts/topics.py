"""Topic names, in one place, with the message type each one carries."""

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from contracts.arbiter import ArbiterDecision
from contracts.audio import AudioFrame
from contracts.avatar import AvatarExpr
from contracts.chat import ChatIncoming, ChatMessage
from contracts.control import Control
from contracts.envelope import Envelope
from contracts.limits import AUDIO_FRAME_MAXLEN, DEFAULT_MAXLEN
from contracts.moderation import ModerationVerdict
from contracts.policy import PolicyToken
from contracts.speech import AsrFinal, AsrPartial, SpeechEvent
from contracts.tools import ToolEvent
from contracts.tts import PlaybackProgress, TtsChunk
from contracts.vision import VisionObservation

M = TypeVar("M", bound=Envelope)

Overflow = Literal["block", "drop_oldest"]
Tracing = Literal["opens", "spans", "context", "off"]


@dataclass(frozen=True)
class Topic(Generic[M]):
    """A stream and its contract.

    ordered: partitioned by session, so one consumer sees a session's messages in order.
    overflow: what a full in-process queue does: wait for room, or drop the oldest entry.
    tracing: how its messages join a turn's trace. "spans": a span where each is published
      and handled, inside the trace of its cause ("opens": also starts a trace when it has
      none). "context": the trace travels in the headers but makes no spans, for high-rate
      messages that one span of their producer covers (tokens). "off": no trace at all
      (audio frames; asr's utterance span stands for them).
    """

    name: str
    model: type[M]
    description: str
    ordered: bool = True
    overflow: Overflow = "block"
    maxlen: int = DEFAULT_MAXLEN
    tracing: Tracing = "spans"


AUDIO_FRAME = Topic(
    "audio.frame",
    AudioFrame,
    "16 kHz mono s16le PCM, 20 ms per frame, from capture to asr.",
    overflow="drop_oldest",
    maxlen=AUDIO_FRAME_MAXLEN,
    tracing="off",
)
ASR_SPEECH = Topic(
    "asr.speech", SpeechEvent, "Voice activity: the user started or stopped speaking."
)
ASR_PARTIAL = Topic("asr.partial", AsrPartial, "Interim transcripts while the user speaks.")
ASR_FINAL = Topic("asr.final", AsrFinal, "The final transcript of an utterance; opens a turn.")
CHAT_MESSAGE = Topic(
    "chat.message",
    ChatMessage,
    "Chat lines to answer, one turn each: chosen by the arbiter, or the operator's own.",
    tracing="opens",
)
CHAT_INCOMING = Topic(
    "chat.incoming",
    ChatIncoming,
    "Audience chat as it arrives (Twitch, Discord); the arbiter chooses what is answered.",
    tracing="opens",
)
ARBITER_DECISION = Topic(
    "arbiter.decision",
    ArbiterDecision,
    "What the arbiter did with each chat line (queued, chosen, merged, dropped) and why.",
)
MODERATION = Topic(
    "moderation",
    ModerationVerdict,
    "What moderation refused, renamed or replaced, with its reasons.",
)
POLICY_TOKEN = Topic(
    "policy.token", PolicyToken, "Reply tokens, ordered per turn.", tracing="context"
)
TTS_CHUNK = Topic("tts.chunk", TtsChunk, "Synthesized speech, one sentence or clause a chunk.")
PLAYBACK_PROGRESS = Topic(
    "playback.progress", PlaybackProgress, "How far the reply's audio has played."
)
AVATAR_EXPR = Topic("avatar.expr", AvatarExpr, "Expression and mouth track for the avatar.")
CONTROL = Topic(
    "control",
    Control,
    "Interrupts, persona changes, module toggles, panic.",
    ordered=False,
    tracing="opens",
)
TOOL_EVENT = Topic(
    "tool.event", ToolEvent, "The policy's tool calls and their results, one event each."
)
VISION_OBSERVATION = Topic(
    "vision.observation",
    VisionObservation,
    "What a camera stage or the panel saw, in words and labels (the describe-what-you-see "
    "tool reads the latest).",
)

ALL_TOPICS: tuple[Topic[Envelope], ...] = (
    AUDIO_FRAME,
    ASR_SPEECH,
    ASR_PARTIAL,
    ASR_FINAL,
    CHAT_MESSAGE,
    POLICY_TOKEN,
    TTS_CHUNK,
    PLAYBACK_PROGRESS,
    AVATAR_EXPR,
    CONTROL,
    CHAT_INCOMING,
    ARBITER_DECISION,
    MODERATION,
    TOOL_EVENT,
    VISION_OBSERVATION,
)  # type: ignore[assignment]


def topic_named(name: str) -> Topic[Envelope]:
    """The topic of that name, or a ValueError that lists the known ones."""
    for topic in ALL_TOPICS:
        if topic.name == name:
            return topic
    known = ", ".join(t.name for t in ALL_TOPICS)
    raise ValueError(f"unknown topic {name!r}; known topics: {known}")
