"""`marionette up`'s process supervisor: every stage a child, restarted when it crashes.

Each child's output is read line by line and printed with its stage's name in front, so
one terminal shows the whole system. A child that exits 0 is done (capture, at the end of
its file) and stays down; one that crashes restarts after a growing delay; one that exits
with CONFIG_ERROR cannot start as configured, so restarting it would only repeat the
error: the supervisor stops everything and says which stage to fix.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

from services.bus.redis_server import die_with_parent

CONFIG_ERROR = 2
"""The exit code of `marionette run` for a bad setting or a missing model."""

FIRST_RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
HEALTHY_AFTER_S = 60.0
"""A child that ran this long before crashing gets the first restart delay again."""

STOP_GRACE_S = 15.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_delay_s: float = FIRST_RESTART_DELAY_S
    restart_at: float | None = None
    finished: bool = False
    pump: threading.Thread | None = field(default=None, repr=False)


class StageFailed(RuntimeError):
    """A stage exited with CONFIG_ERROR: it cannot run until its settings are fixed."""


class Supervisor:
    def __init__(
        self,
        commands: Mapping[str, list[str]],
        env: Mapping[str, str],
        write: Callable[[str, str], None],
    ) -> None:
        """commands: stage name -> argv; write(stage, line) prints one line of a child."""
        self.children = {name: Child(name, argv) for name, argv in commands.items()}
        self.env = {**env, "MARIONETTE_SUPERVISED": "1", "PYTHONUNBUFFERED": "1"}
        self.write = write
        self._lock = threading.Lock()  # one line at a time from the pump threads

    def start(self) -> None:
        for child in self.children.values():
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C reaches the supervisor only, which then stops
            # the stages in order instead of all of them racing at once.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        stream = child.process.stdout
        assert stream is not None
        child.pump = threading.Thread(
            target=self._pump, args=(child.name, stream), name=f"log-{child.name}", daemon=True
        )
        child.pump.start()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                self.write(name, line)
        stream.close()

    def _note(self, name: str, message: str) -> None:
        with self._lock:
            self.write(name, f"[supervisor] {message}")

    def poll(self) -> None:
        """Notice exits, restart what crashed when its delay is over; call it regularly."""
        now = time.monotonic()
        for child in self.children.values():
            if child.finished or child.process is None:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._note(child.name, f"restarting (restart {child.restarts})")
                    self._spawn(child)
                continue
            code = child.process.poll()
            if code is None:
                continue
            if child.pump is not None:
                child.pump.join(timeout=2)  # its last lines come before our verdict
            if code == 0:
                child.finished = True
                self._note(child.name, "finished")
            elif code == CONFIG_ERROR:
                child.finished = True
                raise StageFailed(
                    f"stage {child.name} cannot start as configured (exit {code}); "
                    "its error is above"
                )
            else:
                if now - child.started_at >= HEALTHY_AFTER_S:
                    child.restart_delay_s = FIRST_RESTART_DELAY_S
                self._note(
                    child.name,
                    f"crashed ({_describe(code)}); restarting in {child.restart_delay_s:.0f} s",
                )
                child.restart_at = now + child.restart_delay_s
                child.restart_delay_s = min(child.restart_delay_s * 2, MAX_RESTART_DELAY_S)

    def running(self) -> list[str]:
        return [c.name for c in self.children.values() if not c.finished]

    def stop(self) -> None:
        """SIGTERM every stage, wait for them to finish their message, then SIGKILL."""
        live = [
            c.process
            for c in self.children.values()
            if c.process is not None and c.process.poll() is None
        ]
        for process in live:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in live:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for child in self.children.values():
            if child.pump is not None:
                child.pump.join(timeout=2)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def stage_command(name: str, metrics_port: int | None = None) -> list[str]:
    argv = [sys.executable, "-m", "services", "run", name]
    return argv if metrics_port is None else [*argv, "--metrics-port", str(metrics_port)]


def supervised() -> bool:
    """True in a stage that `marionette up` started: log plainly, it adds the prefixes."""
    return os.environ.get("MARIONETTE_SUPERVISED") == "1"
