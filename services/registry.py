"""Every stage `marionette run` knows, by name. Later stages add themselves here."""

import importlib

from services.bus import Stage

STAGES: dict[str, str] = {
    "monitor": "services.monitor.stage",
}


def load_stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGES))}")
    stage = importlib.import_module(STAGES[name]).stage
    if not isinstance(stage, Stage):
        raise TypeError(f"{STAGES[name]}.stage is not a Stage")
    return stage
