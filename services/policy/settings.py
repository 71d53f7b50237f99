"""policy settings: MARIONETTE_POLICY_* (or [policy] in marionette.toml)."""

from pathlib import Path
from typing import ClassVar, Literal
from zoneinfo import available_timezones

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.moderation import BUNDLED_RULES
from services.policy.persona import BUNDLED_PERSONAS
from services.settings import MarionetteSettings

ToolName = Literal[
    "time", "dice", "choose", "set_expression", "switch_scene", "remember", "recall",
    "describe_view",
]  # fmt: skip


class PolicySettings(MarionetteSettings):
    model_config = SettingsConfigDict(env_prefix="MARIONETTE_POLICY_")
    toml_table: ClassVar[str | None] = "policy"

    backend: Literal["llamacpp", "openai", "ollama"] = Field(
        default="llamacpp",
        description="llamacpp (embedded, offline), openai (any OpenAI-compatible server), ollama.",
    )
    model: str = Field(
        default="qwen2.5-0.5b",
        description="llamacpp: a bundled model or a .gguf path; openai/ollama: the model name.",
    )
    base_url: str = Field(
        default="http://127.0.0.1:11434",
        description="Server address for openai (e.g. http://127.0.0.1:8080/v1) and ollama.",
    )
    api_key: str = Field(default="", description="API key for an OpenAI-compatible server.")
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(default=120, ge=1, le=4096, description="Longest reply, in tokens.")
    context_size: int = Field(default=2048, ge=256, le=131_072, description="Context window.")
    threads: int = Field(default=2, ge=1, le=128, description="CPU threads (llamacpp).")
    seed: int | None = Field(
        default=None,
        description="Fixed sampling seed; unset: from the turn id, so a redelivery repeats.",
    )
    retries: int = Field(default=3, ge=0, le=10, description="Retries of a failing backend call.")
    retry_backoff_ms: int = Field(default=500, ge=0, description="First retry delay, doubling.")
    request_timeout_s: float = Field(default=60, gt=0, description="One backend call's limit.")
    persona_file: Path = Field(
        default=BUNDLED_PERSONAS / "marionette.toml", description="The persona at start."
    )
    personas_dir: Path = Field(
        default=BUNDLED_PERSONAS, description="Where control messages find personas by name."
    )
    rules_dir: Path = Field(default=BUNDLED_RULES, description="Moderation rule files.")
    memory_messages: int = Field(
        default=12, ge=2, le=200, description="Recent messages kept word for word."
    )
    summary_every: int = Field(
        default=8, ge=2, le=200, description="Fold older messages into the summary this often."
    )
    memory_window_s: int = Field(
        default=6 * 3600, ge=60, description="Memory older than this is not restored."
    )
    memory_backup_days: int = Field(
        default=30, ge=1, le=3650, description="How long a cleared memory's backup is kept."
    )
    tools: list[ToolName] = Field(
        default=["time", "dice", "choose", "set_expression", "switch_scene", "remember",
                 "recall", "describe_view"],
        description="Tools the LLM may call, a JSON list in the environment ([] for none); "
        "switch_scene is offered only on the streamer's own turns.",
    )  # fmt: skip
    tool_calling: Literal["auto", "native", "routed"] = Field(
        default="auto",
        description="native: the LLM is offered the tools and decides; routed: the line's "
        "meaning picks a tool (services.policy.tools.gate) and the LLM only writes its "
        "arguments, for models too small to decide (the bundled one); auto: routed for "
        "llamacpp, native otherwise.",
    )
    timezone: str = Field(
        default="",
        description="The character's time zone for the time tool (IANA, e.g. Europe/Paris); "
        "empty: the machine's.",
    )
    tool_timeout_s: float = Field(default=5, gt=0, le=120, description="One tool call's limit.")
    max_tool_rounds: int = Field(
        default=2, ge=0, le=8, description="Rounds of tool calls in one turn before it answers."
    )
    tool_filler_after_ms: int = Field(
        default=700, ge=0,
        description="If the tools have not answered by then, the character says tool_filler.",
    )  # fmt: skip
    tool_filler: str = Field(
        default="Let me check...", max_length=200,
        description="What the character says while a slow tool runs (empty: nothing).",
    )  # fmt: skip

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        if zone and zone not in available_timezones():
            raise ValueError(f"{zone!r} is no IANA time zone (e.g. Europe/Paris, UTC)")
        return zone
