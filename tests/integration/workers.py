"""Starting, killing, pausing and restarting echo_worker processes from a test."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.bus import BusSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: BusSettings) -> dict[str, str]:
    """The environment of a stage process that talks to the test's Redis as `settings` say."""
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url or "",
        "MARIONETTE_LEASE_MS": str(settings.lease_ms),
        "MARIONETTE_PARTITIONS": str(settings.partitions),
        "MARIONETTE_REDIS_CLUSTER": "true" if settings.redis_cluster else "false",
        "MARIONETTE_RETRY_BACKOFF_MS": str(settings.retry_backoff_ms),
        "MARIONETTE_MAX_DELIVERIES": str(settings.max_deliveries),
        "MARIONETTE_HANDLER_TIMEOUT_S": str(settings.handler_timeout_s),
    }


class Workers:
    def __init__(self, settings: BusSettings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, tuple[str, ...]] = {}

    def start(self, replica: str, *extra: str) -> subprocess.Popen[bytes]:
        """Start an echo worker under this replica id (its log appended to <replica>.log)."""
        log = open(self.log_dir / f"{replica}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.echo_worker", "--replica", replica, *extra],
            cwd=REPO_ROOT,
            env=worker_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes[replica] = process
        self.args[replica] = extra
        return process

    def restart(self, replica: str) -> subprocess.Popen[bytes]:
        """Start the replica again, same id and options (as `marionette up` does)."""
        assert self.processes[replica].poll() is not None, f"{replica} is still running"
        return self.start(replica, *self.args[replica])

    def kill(self, replica: str) -> None:
        process = self.processes[replica]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def pause(self, replica: str) -> None:
        """SIGSTOP: the process stalls (a long GC pause, a frozen VM), its leases run out."""
        self.processes[replica].send_signal(signal.SIGSTOP)

    def resume(self, replica: str) -> None:
        self.processes[replica].send_signal(signal.SIGCONT)

    def wait_exit(self, replica: str, timeout_s: float = 30.0) -> int:
        process = self.processes[replica]
        deadline = time.monotonic() + timeout_s
        while (code := process.poll()) is None:
            assert time.monotonic() < deadline, f"{replica} did not exit\n{self.log(replica)}"
            time.sleep(0.02)
        return code

    def log(self, replica: str) -> str:
        return (self.log_dir / f"{replica}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused one must hear the SIGTERM
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def echo_workers(settings: BusSettings, log_dir: Path) -> Iterator[Workers]:
    workers = Workers(settings, log_dir)
    try:
        yield workers
    finally:
        workers.stop_all()


def start_marionette(
    args: list[str], settings: BusSettings, log_path: Path
) -> "subprocess.Popen[bytes]":
    """`marionette ARGS` as a child process on the test's Redis, its output in log_path."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services", *args],
            cwd=REPO_ROOT,
            env={**worker_env(settings), "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
