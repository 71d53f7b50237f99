"""The bus runtime every stage shares: at-least-once delivery on Redis Streams.

Read stage.py first: it shows how a stage declares handlers and publishers.
"""

from services.bus.settings import BusSettings, ConfigError, load_bus_settings
from services.bus.stage import Stage, StageRuntime, TopicPublisher

__all__ = [
    "BusSettings",
    "ConfigError",
    "Stage",
    "StageRuntime",
    "TopicPublisher",
    "load_bus_settings",
]
