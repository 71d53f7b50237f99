"""How much CPU the rest of the machine took while a benchmark ran (Linux /proc).

A latency benchmark on a shared two-core machine is skewed by whatever else runs there.
OtherLoad tells, for a span of time, how many cores were busy outside this process and its
descendants (their stage processes, Redis, a model server): every busy tick the kernel
counted, less the ticks of this process tree.
"""

import os
import time
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_ticks() -> int:
    """All CPUs' busy ticks since boot (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def _tree_ticks(root: int) -> int:
    """CPU ticks (user + system) of `root` and its live descendants."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        total += ticks.get(pid, 0)
        frontier += [child for child, ppid in parent.items() if ppid == pid]
    return total


class OtherLoad:
    """Cores busy outside this process tree between start() and cores()."""

    def __init__(self) -> None:
        self.available = Path("/proc/stat").exists()
        self._start = (0.0, 0, 0)

    def start(self) -> None:
        if self.available:
            self._start = (time.monotonic(), _busy_ticks(), _tree_ticks(os.getpid()))

    def cores(self) -> float | None:
        """Mean cores the rest of the machine kept busy since start(); None off Linux."""
        if not self.available:
            return None
        began, busy, ours = self._start
        elapsed = time.monotonic() - began
        if elapsed <= 0:
            return None
        others = (_busy_ticks() - busy) - (_tree_ticks(os.getpid()) - ours)
        return max(0.0, others / TICKS_PER_S / elapsed)
