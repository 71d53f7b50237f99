"""A point where a fake backend waits, so a test can act while a stage is mid-way."""

import asyncio


class Hold:
    """`after(n)` makes the fake wait once n steps are done (tokens sent, blocks played)
    until `release()`; `holding()` returns once it waits there."""

    def __init__(self) -> None:
        self._after: int | None = None
        self._holding = asyncio.Event()
        self._go = asyncio.Event()

    def after(self, steps: int) -> None:
        self._after = steps
        self._holding.clear()
        self._go.clear()

    async def holding(self) -> None:
        await asyncio.wait_for(self._holding.wait(), 5)

    def release(self) -> None:
        self._after = None
        self._go.set()

    async def point(self, done: int) -> None:
        """Called by the fake before each step, with the number of steps done."""
        if self._after is not None and done >= self._after:
            self._holding.set()
            await self._go.wait()
