"""The bus runtime every stage shares: at-least-once delivery on Redis Streams.

Read stage.py first (how a stage is written), then runtime.py (how it is run).
"""

from services.bus.producer import Producer, run_stage
from services.bus.runtime import StageRuntime
from services.bus.settings import BusSettings, load_bus_settings
from services.bus.stage import Bus, Checkpointed, Publishes, SessionMemory, Stage, consumes

__all__ = [
    "Bus",
    "BusSettings",
    "Checkpointed",
    "Producer",
    "Publishes",
    "SessionMemory",
    "Stage",
    "StageRuntime",
    "consumes",
    "load_bus_settings",
    "run_stage",
]
