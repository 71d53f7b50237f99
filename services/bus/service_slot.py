"""The one service object a stage's handlers share: built on first use, or put in by a test.

Handlers are module-level functions (FastStream style), so what they work with (a loaded
model, a sink) lives in a slot beside them rather than in a global of each module.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ServiceSlot(Generic[T]):
    def __init__(self, build: Callable[[], Awaitable[T]]) -> None:
        """build: makes the service from settings; may be slow (a model loading)."""
        self._build = build
        self._service: T | None = None
        self._building = asyncio.Lock()  # concurrent first uses wait for one build

    async def get(self) -> T:
        if self._service is None:
            async with self._building:
                if self._service is None:
                    self._service = await self._build()
        return self._service

    def put(self, service: T | None) -> T | None:
        """Use this service from now on (None: build anew on next use); returns the old one."""
        previous, self._service = self._service, service
        return previous
