"""Running a stage from a script, and publishing from a tool or a test."""

import asyncio
import signal
from collections.abc import Sequence
from typing import Any

from contracts.envelope import Envelope
from contracts.topics import Topic
from services.bus.runtime import StageRuntime
from services.bus.settings import BusSettings, load_bus_settings
from services.bus.stage import Publishes, Stage


def run_stage(stage_cls: type[Stage], settings: BusSettings | None = None) -> None:
    """Run a stage in this process until Ctrl-C or SIGTERM (REDIS_URL names the Redis)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await StageRuntime(stage_cls, settings or load_bus_settings()).run(stop)

    asyncio.run(main())


class Producer:
    """Publishes typed messages from a tool or a test: no handlers, no partitions.

    async with Producer(settings, "replay", [CHAT_MESSAGE]) as out:
        await out.publish(chat)
    """

    def __init__(self, settings: BusSettings, name: str, topics: Sequence[Topic[Any]]) -> None:
        attrs: dict[str, Any] = {"name": name}
        for number, topic in enumerate(topics):
            attrs[f"out{number}"] = Publishes(topic)
        stage_cls = type(f"Producer[{name}]", (Stage,), attrs)
        self.runtime: StageRuntime[Stage] = StageRuntime(stage_cls, settings, follow_switches=False)
        self._topics = {topic.model: topic for topic in topics}

    async def publish(self, message: Envelope) -> bytes | None:
        """Publish on the message's topic; returns its entry id."""
        topic = self._topics.get(type(message))
        if topic is None:
            names = ", ".join(t.name for t in self._topics.values())
            raise TypeError(f"this producer publishes {names}, not {type(message).__name__}")
        return await self.runtime.bus.publisher(topic).publish(message)

    async def __aenter__(self) -> "Producer":
        await self.runtime.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.stop()
