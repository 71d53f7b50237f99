"""A whole Marionette started by a tool (bench, chaos): Redis and supervised stage replicas.

`marionette up` runs the same supervisor in the foreground; the tools run it here, on a
thread, while they drive the system.
"""

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from services.bus.redis_server import EmbeddedRedis
from services.bus.settings import BusSettings
from services.supervisor import Child, Supervisor, replica_names, stage_command

WAIT_FOR_ASR = "MARIONETTE_CAPTURE_WAIT_FOR_ASR_S"


def stage_children(
    stages: Mapping[str, int], metrics_port: int = 0
) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """The supervisor's children for stages and their replica counts: argv and environment.

    Replicas are named tts-1, tts-2..., and keep their names across restarts, so a
    restarted replica takes its own partitions straight back."""
    commands: dict[str, list[str]] = {}
    env: dict[str, dict[str, str]] = {}
    for stage, count in stages.items():
        for number, child in enumerate(replica_names(stage, count), 1):
            port = metrics_port + len(commands) if metrics_port else None
            commands[child] = stage_command(stage, port)
            env[child] = {"MARIONETTE_REPLICA_ID": f"{stage}-{number}"}
            if stage == "gateway" and count > 1:  # the replicas answer on one port
                env[child]["MARIONETTE_GATEWAY_SHARE_PORT"] = "1"
            if stage == "capture" and "asr" in stages and WAIT_FOR_ASR not in os.environ:
                # The sample (or the microphone) starts once asr is ready to hear it.
                env[child][WAIT_FOR_ASR] = "180"
    return commands, env


@contextmanager
def local_system(
    bus: BusSettings,
    stages: Mapping[str, int],
    write: Callable[[str, str], None],
    *,
    redis: EmbeddedRedis | None = None,
    on_ready: Callable[[Child], None] = lambda child: None,
    poll_s: float = 0.05,
    env_defaults: Mapping[str, str] | None = None,
    spares: bool = True,
) -> Iterator[tuple[BusSettings, Supervisor]]:
    """Redis (the one given, else a temporary embedded one) and the stages, stage -> replica
    count, supervised until the block ends. Yields the settings that reach that Redis.
    env_defaults: variables for the stages, unless this process's environment sets them."""
    server = redis or EmbeddedRedis(binary=bus.redis_server)
    own_server = redis is None
    if own_server:
        server.start()
    commands, child_env = stage_children(stages)
    supervisor = Supervisor(
        commands, {**(env_defaults or {}), **os.environ, "REDIS_URL": server.url}, write,
        child_env=child_env, on_ready=on_ready, spares=spares,
    )  # fmt: skip
    supervisor.start()
    stopped = threading.Event()

    def watch() -> None:
        while not stopped.wait(poll_s):
            supervisor.poll()

    watcher = threading.Thread(target=watch, name="supervisor", daemon=True)
    watcher.start()
    try:
        yield bus.model_copy(update={"redis_url": server.url}), supervisor
    finally:
        stopped.set()
        watcher.join(timeout=5)
        supervisor.stop()
        if own_server:
            server.close()
