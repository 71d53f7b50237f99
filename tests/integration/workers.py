"""Starting and stopping echo_worker processes from a test."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.bus import BusSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: BusSettings) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url or "",
        "MARIONETTE_CLAIM_IDLE_MS": str(settings.claim_idle_ms),
        "MARIONETTE_LEASE_MS": str(settings.lease_ms),
        "MARIONETTE_PARTITIONS": str(settings.partitions),
        "MARIONETTE_RETRY_BACKOFF_MS": str(settings.retry_backoff_ms),
    }


class Workers:
    def __init__(self, settings: BusSettings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, replica: str, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{replica}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.echo_worker", "--replica", replica, *extra],
            cwd=REPO_ROOT,
            env=worker_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes[replica] = process
        return process

    def kill(self, replica: str) -> None:
        process = self.processes[replica]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def log(self, replica: str) -> str:
        return (self.log_dir / f"{replica}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


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
