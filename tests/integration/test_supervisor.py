"""`marionette up`'s supervisor: restarts dead stages (at once when they had been serving, after
a growing delay when they never got ready), prefixes their logs, stops cleanly."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.bus import BusSettings
from services.supervisor import FIRST_RESTART_DELAY_S, StageFailed, Supervisor
from tests.integration.workers import start_marionette

pytestmark = pytest.mark.integration


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run_until(supervisor: Supervisor, done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "supervisor did not get there in time"
        supervisor.poll()
        time.sleep(0.05)


def test_a_child_that_never_got_ready_restarts_after_a_growing_delay(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    lines: list[tuple[str, str]] = []
    supervisor = Supervisor(
        {
            # Crashes on its first two starts, then finishes normally.
            "flaky": python(
                f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); "
                "n = len(p.read_text()) if p.exists() else 0; p.write_text('x' * (n + 1)); "
                "print(f'start {n + 1}', flush=True); sys.exit(1 if n < 2 else 0)"
            ),
            "done": python("print('all done')"),
        },
        os.environ,
        lambda stage, line: lines.append((stage, line)),
    )
    supervisor.start()
    try:
        run_until(supervisor, lambda: not supervisor.running(), timeout_s=20)
    finally:
        supervisor.stop()
    assert counter.read_text() == "xxx"
    flaky = [line for stage, line in lines if stage == "flaky"]
    assert [line for line in flaky if line.startswith("start")] == ["start 1", "start 2", "start 3"]
    crashes = [line for line in flaky if "died (exit 1) before it was ready" in line]
    assert len(crashes) == 2
    # A crash loop: the delay doubles between crashes.
    assert "restarting in 1 s" in crashes[0]
    assert "restarting in 2 s" in crashes[1]
    assert ("done", "all done") in lines
    assert ("done", "[supervisor] finished") in lines
    assert not any("restarting" in line for stage, line in lines if stage == "done")


def test_a_child_that_was_serving_restarts_at_once(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    lines: list[tuple[float, str]] = []
    ready: list[str] = []
    supervisor = Supervisor(
        {
            # Says it is serving, then dies on its first two runs; the third finishes.
            "serving": python(
                f"import os, pathlib, sys, time; p = pathlib.Path({str(counter)!r}); "
                "n = len(p.read_text()) if p.exists() else 0; p.write_text('x' * (n + 1)); "
                "os.write(int(os.environ['MARIONETTE_READY_FD']), b'ready'); "
                "print(f'start {n + 1}', flush=True); time.sleep(0.3); "
                "sys.exit(1 if n < 2 else 0)"
            ),
        },
        os.environ,
        lambda stage, line: lines.append((time.monotonic(), line)),
        on_ready=lambda child: ready.append(child.name),
    )
    supervisor.start()
    try:
        run_until(supervisor, lambda: not supervisor.running(), timeout_s=20)
    finally:
        supervisor.stop()
    assert counter.read_text() == "xxx"
    assert ready == ["serving"] * 3
    texts = [line for _, line in lines]
    assert texts.count("[supervisor] died (exit 1) while serving; restarting now") == 2
    assert not any("before it was ready" in line for line in texts)
    died = [t for t, line in lines if line.startswith("[supervisor] died")]
    starts = {line: t for t, line in lines if line.startswith("start ")}
    for n, died_at in zip((2, 3), died, strict=True):
        assert starts[f"start {n}"] - died_at < FIRST_RESTART_DELAY_S, "restarted without delay"


def test_config_error_stops_everything_with_the_stage_named() -> None:
    lines: list[tuple[str, str]] = []
    supervisor = Supervisor(
        {
            "broken": python("import sys; print('error: bad setting'); sys.exit(2)"),
            "steady": python("import time; time.sleep(60)"),
        },
        os.environ,
        lambda stage, line: lines.append((stage, line)),
    )
    supervisor.start()
    try:
        with pytest.raises(StageFailed, match="stage broken cannot start"):
            run_until(supervisor, lambda: False, timeout_s=20)
    finally:
        started = time.monotonic()
        supervisor.stop()
    assert time.monotonic() - started < 5, "SIGTERM should stop a sleeping child at once"
    assert ("broken", "error: bad setting") in lines
    steady = supervisor.children["steady"].process
    assert steady is not None
    assert steady.returncode == -signal.SIGTERM


def _children(parent: int, stage: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(parent), "-f", f"services run {stage}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return [int(p) for p in found.stdout.split()]


def _is_spare(pid: int) -> bool:
    return b"MARIONETTE_STANDBY=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def _child_pid(parent: int, stage: str) -> int:
    """The process serving the stage (not a spare started as one)."""
    serving = [pid for pid in _children(parent, stage) if not _is_spare(pid)]
    return serving[0] if serving else 0


def test_up_restarts_a_killed_stage_and_stops_on_sigint(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    log = tmp_path / "up.log"
    up = start_marionette(["up", "--stage", "monitor", "--no-spares"], bus_settings, log)
    try:
        deadline = time.monotonic() + 60
        # Killed once serving (it says so once ready), to be restarted without back-off.
        while "stage monitor running" not in log.read_text(errors="replace"):
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        first = _child_pid(up.pid, "monitor")
        assert first, log.read_text()
        os.kill(first, signal.SIGKILL)
        while not (second := _child_pid(up.pid, "monitor")) or second == first:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        # It had said it was serving: restarted at once (same replica id), no back-off.
        died = "died (killed by SIGKILL) while serving; restarting now"
        assert f"monitor | [supervisor] {died}" in text
        assert "monitor | [supervisor] restarting (restart 1)" in text
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0, log.read_text()
        # The restarted stage went down with it.
        assert _child_pid(up.pid, "monitor") == 0
        with pytest.raises(ProcessLookupError):
            os.kill(second, 0)
    finally:
        if up.poll() is None:
            up.kill()


def test_up_hands_a_killed_stage_over_to_its_spare(
    bus_settings: BusSettings, tmp_path: Path
) -> None:
    log = tmp_path / "up.log"
    up = start_marionette(["up", "--stage", "monitor"], bus_settings, log)
    try:
        deadline = time.monotonic() + 60

        def wait_for(condition: Callable[[], bool]) -> None:
            while not condition():
                assert up.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)

        wait_for(lambda: "ready to take over" in log.read_text(errors="replace"))
        first = _child_pid(up.pid, "monitor")
        [standby] = [p for p in _children(up.pid, "monitor") if p != first]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: "its spare serves" in log.read_text(errors="replace"))
        text = log.read_text()
        assert (
            "monitor | [supervisor] died (killed by SIGKILL) while serving; its spare serves"
            in text
        )
        assert "monitor | [supervisor] restarting" not in text, "no new process to wait for"
        os.kill(standby, 0)  # the spare is the one serving now
        # and a new spare is started beside it
        wait_for(lambda: len(set(_children(up.pid, "monitor")) - {standby}) == 1)
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0, log.read_text()
        assert _children(up.pid, "monitor") == [], "the stage and its spare went down with it"
    finally:
        if up.poll() is None:
            up.kill()
