"""`marionette up`'s process supervisor: every stage replica a child, restarted when it dies.

Each child's output is read line by line and printed with its name in front, so one
terminal shows the whole system. A child says when it is serving (a line on a pipe whose
descriptor is in MARIONETTE_READY_FD). One that dies after that is restarted at once, under
the same replica id, so it takes its partitions straight back; one that dies before it was
ever ready is in a crash loop and restarts after a growing delay. A child that exits 0 is
done (capture, at the end of its file) and stays down; one that exits with CONFIG_ERROR
cannot start as configured, so the supervisor stops everything and says which to fix.
"""

import contextlib
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
READY_FD_ENV = "MARIONETTE_READY_FD"

FIRST_RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
STOP_GRACE_S = 15.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_at: float | None = None  # when this run said it was serving
    restarts: int = 0
    restart_delay_s: float = FIRST_RESTART_DELAY_S
    restart_at: float | None = None
    finished: bool = False
    pump: threading.Thread | None = field(default=None, repr=False)
    ready_pipe: int | None = field(default=None, repr=False)


class StageFailed(RuntimeError):
    """A stage exited with CONFIG_ERROR: it cannot run until its settings are fixed."""


class Supervisor:
    def __init__(
        self,
        commands: Mapping[str, list[str]],
        env: Mapping[str, str],
        write: Callable[[str, str], None],
        *,
        child_env: Mapping[str, Mapping[str, str]] | None = None,
        on_ready: Callable[[Child], None] = lambda child: None,
    ) -> None:
        """commands: child name -> argv; child_env: extra variables per child;
        write(name, line) prints one line of a child; on_ready(child) when one is serving."""
        self.children = {
            name: Child(name, argv, dict((child_env or {}).get(name, {})))
            for name, argv in commands.items()
        }
        self.env = {**env, "MARIONETTE_SUPERVISED": "1", "PYTHONUNBUFFERED": "1"}
        self.write = write
        self.on_ready = on_ready
        self._lock = threading.Lock()  # one line at a time from the pump threads

    def start(self) -> None:
        for child in self.children.values():
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        try:
            child.process = subprocess.Popen(
                child.argv,
                env={**self.env, **child.env, READY_FD_ENV: str(write_end)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(write_end,),
                # Its own process group: Ctrl-C reaches the supervisor only, which then stops
                # the stages in order instead of all of them racing at once.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            os.close(write_end)
        self._close_pipe(child)
        child.ready_pipe = read_end
        child.started_at = time.monotonic()
        child.ready_at = None
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

    def _check_ready(self, child: Child) -> None:
        if child.ready_at is not None or child.ready_pipe is None:
            return
        with contextlib.suppress(BlockingIOError):
            if os.read(child.ready_pipe, 64):
                child.ready_at = time.monotonic()
                child.restart_delay_s = FIRST_RESTART_DELAY_S  # it is not a crash loop
                self.on_ready(child)

    def poll(self) -> None:
        """Notice readiness and exits, restart what died; call it often (every 50-200 ms)."""
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
            self._check_ready(child)
            code = child.process.poll()
            if code is None:
                continue
            self._check_ready(child)
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
            elif child.ready_at is not None:
                self._note(child.name, f"died ({_describe(code)}) while serving; restarting now")
                child.restart_at = now
            else:
                self._note(
                    child.name,
                    f"died ({_describe(code)}) before it was ready; restarting in "
                    f"{child.restart_delay_s:.0f} s",
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
            self._close_pipe(child)

    @staticmethod
    def _close_pipe(child: Child) -> None:
        if child.ready_pipe is not None:
            with contextlib.suppress(OSError):
                os.close(child.ready_pipe)
            child.ready_pipe = None


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


def replica_names(stage: str, count: int) -> list[str]:
    """The children of a stage with `count` replicas: tts, or tts-1, tts-2..."""
    return [stage] if count == 1 else [f"{stage}-{n}" for n in range(1, count + 1)]


def supervised() -> bool:
    """True in a stage that `marionette up` started: log plainly, it adds the prefixes."""
    return os.environ.get("MARIONETTE_SUPERVISED") == "1"


def notify_ready() -> None:
    """In a supervised stage: say it is serving (the supervisor then restarts it at once
    should it die)."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
