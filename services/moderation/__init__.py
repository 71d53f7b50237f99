"""Moderation: what may reach the LLM, and what may be said.

Used by the arbiter (audience chat, before it is queued) and by policy (every input
before the prompt, every reply before it is spoken). See services.moderation.moderator.
"""

from services.moderation.moderator import (
    BLEEP,
    BUNDLED_RULES,
    SAFE_AUTHOR,
    SPLIT_WINDOW,
    Moderator,
    RulesError,
    StreamSanitizer,
    Verdict,
)

__all__ = [
    "BLEEP",
    "BUNDLED_RULES",
    "SAFE_AUTHOR",
    "SPLIT_WINDOW",
    "Moderator",
    "RulesError",
    "StreamSanitizer",
    "Verdict",
]
