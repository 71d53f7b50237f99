"""Every stage `marionette run` and `marionette up` know, by name. A new stage adds a line.

Stages are imported when asked for, so a command loads only the stage (and models) it runs.
"""

import importlib
from typing import Any

from services.bus import Stage

STAGES: dict[str, str] = {
    "capture": "services.capture.stage:CaptureStage",
    "asr": "services.asr.stage:AsrStage",
    "policy": "services.policy.stage:PolicyStage",
    "tts": "services.tts.stage:TtsStage",
    "avatar": "services.avatar.stage:AvatarStage",
    "playback": "services.playback.stage:PlaybackStage",
    "monitor": "services.monitor.stage:MonitorStage",
    "gateway": "services.gateway.stage:GatewayStage",
    "arbiter": "services.arbiter.stage:ArbiterStage",
    "twitch": "services.twitch.stage:TwitchStage",
    "discord": "services.discord.stage:DiscordStage",
    "obs": "services.obs.stage:ObsStage",
    "vts": "services.vts.stage:VtsStage",
    "camera": "services.vision.stage:CameraStage",
}

OPTIONAL_STAGES: dict[str, str] = {
    "twitch": "services.twitch.settings:TwitchSettings",
    "discord": "services.discord.settings:DiscordSettings",
    "obs": "services.obs.settings:ObsSettings",
    "vts": "services.vts.settings:VtsSettings",
    "camera": "services.vision.settings:VisionSettings",
}
"""Integrations `up` starts only when configured: their settings class's `configured()`
says so (a channel, a token or a URL set); `up --stage NAME` starts one regardless."""

MODULES: tuple[str, ...] = tuple(name for name in STAGES if name != "gateway")
"""What a ModuleToggle can switch off: each stage by its name (the gateway stays on, or
nobody could switch anything back on)."""


def default_stages() -> list[str]:
    """What `up` starts without --stage: every stage, the optional ones when configured.
    A bad setting of an optional stage raises its StageStartError (naming the variable)."""
    chosen = []
    for name in sorted(STAGES):
        if name in OPTIONAL_STAGES:
            module_name, _, class_name = OPTIONAL_STAGES[name].partition(":")
            settings_class: Any = getattr(importlib.import_module(module_name), class_name)
            if not settings_class.configured():
                continue
        chosen.append(name)
    return chosen


def stage_class(name: str) -> type[Stage]:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGES))}")
    module_name, _, class_name = STAGES[name].partition(":")
    found: Any = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(found, type) and issubclass(found, Stage)) or found.name != name:
        raise TypeError(f"{STAGES[name]} is not the Stage named {name!r}")
    return found
