"""Marionette's message contracts: one pydantic model per topic, topic names and limits."""

from contracts.arbiter import ArbiterDecision, QueuedLine
from contracts.audio import AudioFrame
from contracts.avatar import AvatarExpr
from contracts.chat import ChatIncoming, ChatMessage
from contracts.control import Control, Interrupt, ModuleToggle, Panic, Pause, PersonaChange
from contracts.envelope import Envelope
from contracts.limits import SCHEMA_VERSION
from contracts.moderation import ModerationVerdict
from contracts.policy import PolicyToken, scripted_reply
from contracts.speech import AsrFinal, AsrPartial, SpeechEvent
from contracts.topics import ALL_TOPICS, Topic, topic_named
from contracts.tts import PhonemeTiming, PlaybackProgress, TtsChunk

__all__ = [
    "ALL_TOPICS",
    "SCHEMA_VERSION",
    "ArbiterDecision",
    "AsrFinal",
    "AsrPartial",
    "AudioFrame",
    "AvatarExpr",
    "ChatIncoming",
    "ChatMessage",
    "Control",
    "Envelope",
    "Interrupt",
    "ModerationVerdict",
    "ModuleToggle",
    "Panic",
    "Pause",
    "PersonaChange",
    "PhonemeTiming",
    "PlaybackProgress",
    "PolicyToken",
    "QueuedLine",
    "SpeechEvent",
    "Topic",
    "TtsChunk",
    "scripted_reply",
    "topic_named",
]
