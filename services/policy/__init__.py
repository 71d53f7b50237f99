"""The policy stage: streaming LLM replies with persona, memory, expressions and moderation."""
