"""Every stage `marionette run` knows, by name. A new stage adds itself here.

A stage module defines `stage` (its Stage); a stage that produces from outside the bus
(capture) also defines `async def main(bus: BusSettings, stop: asyncio.Event)`.
"""

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from types import ModuleType

from services.bus import BusSettings, Stage, StageRuntime

STAGES: dict[str, str] = {
    "capture": "services.capture.stage",
    "asr": "services.asr.stage",
    "policy": "services.policy.stage",
    "tts": "services.tts.stage",
    "avatar": "services.avatar.stage",
    "playback": "services.playback.stage",
    "monitor": "services.monitor.stage",
}

StageMain = Callable[[BusSettings, asyncio.Event], Awaitable[None]]


def _module(name: str) -> ModuleType:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGES))}")
    return importlib.import_module(STAGES[name])


def load_stage(name: str) -> Stage:
    stage = _module(name).stage
    if not isinstance(stage, Stage):
        raise TypeError(f"{STAGES[name]}.stage is not a Stage")
    return stage


def stage_main(name: str) -> StageMain:
    """What `marionette run NAME` runs."""
    module = _module(name)
    custom: StageMain | None = getattr(module, "main", None)
    if custom is not None:
        return custom
    stage = load_stage(name)

    async def consume(bus: BusSettings, stop: asyncio.Event) -> None:
        await StageRuntime(stage, bus).run(stop)

    return consume
