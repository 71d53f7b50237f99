"""`marionette up`'s process supervisor: every stage replica a child, replaced when it dies.

Each child's output is read line by line and printed with its name in front, so one
terminal shows the whole system. A child says on a pipe (MARIONETTE_READY_FD) when it is
prepared (its model loaded) and when it is serving.

With spares (the default of `up`), each replica has a standby process beside it: prepared,
under the same replica id, but not serving. When the replica dies while serving, its spare
is told to serve (SIGUSR1) and takes the replica's partitions back at once (a fraction of
a second, where starting a new process takes one or two), and a new spare is started.
Without a spare, a replica that dies while serving is restarted at once; one that dies
before it was ever ready is in a crash loop and restarts after a growing delay. A child
that exits 0 is done (capture, at the end of its file) and stays down; one that exits with
CONFIG_ERROR cannot start as configured, so the supervisor stops everything.
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
STANDBY_ENV = "MARIONETTE_STANDBY"

FIRST_RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
STOP_GRACE_S = 15.0


@dataclass
class Process:
    """One OS process of a child, with its output pump and its readiness pipe."""

    popen: subprocess.Popen[bytes]
    pipe: int
    label: list[str]  # the name its lines are printed under (changes when a spare serves)
    pump: threading.Thread
    prepared: bool = False
    ready: bool = False

    def poll(self) -> int | None:
        return self.popen.poll()

    def read_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            said = os.read(self.pipe, 256).decode(errors="replace")
            self.prepared = self.prepared or "prepared" in said or "ready" in said
            self.ready = self.ready or "ready" in said

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.pipe)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_at: float | None = None  # when the process serving it said it was serving
    restarts: int = 0
    restart_delay_s: float = FIRST_RESTART_DELAY_S
    restart_at: float | None = None
    finished: bool = False
    current: Process | None = field(default=None, repr=False)
    spare: Process | None = field(default=None, repr=False)


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
        spares: bool = False,
    ) -> None:
        """commands: child name -> argv; child_env: extra variables per child;
        write(name, line) prints one line of a child; on_ready(child) when one is serving;
        spares: keep a prepared standby beside each child, to take over when it dies."""
        self.children = {
            name: Child(name, argv, dict((child_env or {}).get(name, {})))
            for name, argv in commands.items()
        }
        self.env = {**env, "MARIONETTE_SUPERVISED": "1", "PYTHONUNBUFFERED": "1"}
        self.write = write
        self.on_ready = on_ready
        self.spares = spares
        self._lock = threading.Lock()  # one line at a time from the pump threads

    def settled(self) -> bool:
        """Every child serves and, with spares, every spare is prepared: nothing is
        loading any more (a spare loading its models beside a turn slows that turn)."""
        for child in self.children.values():
            if child.finished:
                continue
            if child.ready_at is None:
                return False
            if self.spares and (child.spare is None or not child.spare.prepared):
                return False
        return True

    def start(self) -> None:
        for child in self.children.values():
            self._serve(child, self._spawn(child, standby=False))

    def _spawn(self, child: Child, *, standby: bool) -> Process:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        extra = {STANDBY_ENV: "1"} if standby else {}
        try:
            popen = subprocess.Popen(
                child.argv,
                env={**self.env, **child.env, **extra, READY_FD_ENV: str(write_end)},
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
        label = [f"{child.name}~" if standby else child.name]
        assert popen.stdout is not None
        pump = threading.Thread(
            target=self._pump, args=(label, popen.stdout), name=f"log-{label[0]}", daemon=True
        )
        pump.start()
        return Process(popen, read_end, label, pump)

    def _serve(self, child: Child, process: Process) -> None:
        """Make `process` the one serving the child."""
        if child.current is not None:
            child.current.close()
        process.label[0] = child.name
        child.current, child.process = process, process.popen
        child.started_at = time.monotonic()
        child.ready_at = None
        child.restart_at = None

    def _pump(self, label: list[str], stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                self.write(label[0], line)
        stream.close()

    def _note(self, name: str, message: str) -> None:
        with self._lock:
            self.write(name, f"[supervisor] {message}")

    def poll(self) -> None:
        """Notice readiness and exits, replace what died; call it often (every 50 ms)."""
        now = time.monotonic()
        for child in self.children.values():
            if child.finished or child.current is None:
                continue
            self._check_spare(child)
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._note(child.name, f"restarting (restart {child.restarts})")
                    self._serve(child, self._spawn(child, standby=False))
                continue
            current = child.current
            current.read_pipe()
            if current.ready and child.ready_at is None:
                child.ready_at = now
                child.restart_delay_s = FIRST_RESTART_DELAY_S  # it is not a crash loop
                self.on_ready(child)
            if child.ready_at is not None and self.spares and child.spare is None:
                child.spare = self._spawn(child, standby=True)
            code = current.poll()
            if code is not None:
                self._died(child, code, now)

    def _check_spare(self, child: Child) -> None:
        spare = child.spare
        if spare is None:
            return
        spare.read_pipe()
        code = spare.poll()
        if code is not None:  # a spare that died is started again, once it is needed
            child.spare = None
            spare.close()
            if code == CONFIG_ERROR:
                self._note(child.name, "its spare cannot start as configured; no spare")
                self.spares = False

    def _died(self, child: Child, code: int, now: float) -> None:
        current = child.current
        assert current is not None
        current.pump.join(timeout=2)  # its last lines come before our verdict
        if code == 0:
            child.finished = True
            self._note(child.name, "finished")
            return
        if code == CONFIG_ERROR:
            child.finished = True
            raise StageFailed(
                f"stage {child.name} cannot start as configured (exit {code}); its error is above"
            )
        served = child.ready_at is not None
        # Only a prepared spare: before that it may not listen to SIGUSR1 yet.
        if child.spare is not None and child.spare.prepared and served:
            spare, child.spare = child.spare, None
            with contextlib.suppress(ProcessLookupError):
                spare.popen.send_signal(signal.SIGUSR1)
            child.restarts += 1
            self._serve(child, spare)
            self._note(child.name, f"died ({_describe(code)}) while serving; its spare serves")
        elif served:
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
        """SIGTERM every stage (and spare), wait for them to finish their message, then
        SIGKILL."""
        processes = [
            process
            for child in self.children.values()
            for process in (child.current, child.spare)
            if process is not None
        ]
        live = [p.popen for p in processes if p.poll() is None]
        for popen in live:
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for popen in live:
            try:
                popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        for process in processes:
            process.pump.join(timeout=2)
            process.close()


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


def _tell_supervisor(word: bytes, *, last: bool) -> None:
    fd = os.environ.get(READY_FD_ENV)
    if fd is None:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(int(fd), word + b"\n")
        if last:
            os.close(int(fd))
            del os.environ[READY_FD_ENV]


def notify_prepared() -> None:
    """In a supervised spare: its model is loaded; it can take over at once."""
    _tell_supervisor(b"prepared", last=False)


def notify_ready() -> None:
    """In a supervised stage: it is serving (so, should it die, it is replaced at once)."""
    _tell_supervisor(b"ready", last=True)
