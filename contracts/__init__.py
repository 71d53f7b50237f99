"""Marionette's message contracts: one pydantic model per topic, topic names and limits."""

from contracts.audio import AudioFrame
from contracts.avatar import AvatarExpr
from contracts.chat import ChatMessage
from contracts.control import Control, Interrupt, ModuleToggle, Panic, Pause, PersonaChange
from contracts.envelope import Envelope
from contracts.limits import SCHEMA_VERSION
from contracts.policy import PolicyToken
from contracts.speech import AsrFinal, AsrPartial, SpeechEvent
from contracts.topics import ALL_TOPICS, Topic, topic_named
from contracts.tts import PhonemeTiming, PlaybackProgress, TtsChunk

__all__ = [
    "ALL_TOPICS",
    "SCHEMA_VERSION",
    "AsrFinal",
    "AsrPartial",
    "AudioFrame",
    "AvatarExpr",
    "ChatMessage",
    "Control",
    "Envelope",
    "Interrupt",
    "ModuleToggle",
    "Panic",
    "Pause",
    "PersonaChange",
    "PhonemeTiming",
    "PlaybackProgress",
    "PolicyToken",
    "SpeechEvent",
    "Topic",
    "TtsChunk",
    "topic_named",
]
