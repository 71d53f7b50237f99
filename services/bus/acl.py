"""Redis ACL users, one per stage: what `deploy/docker-compose.yml` runs Redis with.

Every stage reaches Redis as its own user (`redis://tts:PASSWORD@redis:6379/0`), allowed
only Marionette's keys (the topic streams, their dead letters, `marionette:*`) and the
commands the bus uses: no FLUSHALL, CONFIG, KEYS, DEBUG, SHUTDOWN... So a leaked
password (the gateway's is the most exposed) cannot wipe or reconfigure the server, and
one stage's password can be changed without touching the others. The `default` user is
switched off. `health` may only PING (for the container's health check).

    marionette redis-acl --new-env > deploy/.env    # random passwords, once
    marionette redis-acl --out users.acl            # the ACL file, from REDIS_PASSWORD_*
"""

import os
import secrets
from collections.abc import Mapping

from contracts.topics import ALL_TOPICS
from services.bus.dead_letters import DLQ_PREFIX
from services.errors import ConfigError

USERS: tuple[str, ...] = (
    "capture", "asr", "policy", "tts", "avatar", "playback", "monitor", "gateway", "recorder",
    "health", "keda",
)  # fmt: skip
"""One per stage (a stage's replicas share its user), the recorder, the health check, and
KEDA's scaler reading the backlog (deploy/kubernetes/keda/)."""

KEYS = ("marionette:*", f"{DLQ_PREFIX}*", *(f"{t.name}*" for t in ALL_TOPICS))
COMMANDS = (
    "-@all",
    "+@read", "+@write", "+@stream", "+@hash", "+@string", "+@list", "+@set",
    "+@sortedset", "+@keyspace", "+@scripting", "+@transaction", "+@connection",
    "+time", "+client|setinfo", "+client|setname",
    "-@dangerous",
)  # fmt: skip
"""What the bus does: streams and their groups, leases and state (strings, hashes, sorted
sets), fenced writes (Lua scripts), SCAN for dead letters; @dangerous goes last so that
nothing in it (FLUSHALL, KEYS, CONFIG, DEBUG...) is let back in by a category above."""

KEDA_COMMANDS = (
    "-@all", "+hello", "+ping", "+client|setinfo", "+client|setname",
    "+info", "+xinfo|groups", "+xpending", "+xlen",
)  # fmt: skip
"""What KEDA's redis-streams scaler sends to read a backlog (INFO first, for the server's
version): reads only, on Marionette's keys (%R~)."""


def password_variable(user: str) -> str:
    return f"REDIS_PASSWORD_{user.upper()}"


def new_passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(24) for user in USERS}


def passwords_from_env(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    missing = [password_variable(u) for u in USERS if not env.get(password_variable(u))]
    if missing:
        raise ConfigError(
            f"no Redis password in {', '.join(missing)}: make them once with "
            "`marionette redis-acl --new-env > deploy/.env`"
        )
    return {user: env[password_variable(user)] for user in USERS}


def acl_file(passwords: Mapping[str, str]) -> str:
    """The users.acl Redis loads with --aclfile."""
    for user, password in passwords.items():
        if len(password) < 16 or any(c.isspace() for c in password):
            raise ConfigError(
                f"{password_variable(user)}: a Redis password is at least 16 characters, "
                "without spaces"
            )
    lines = ["user default off resetkeys -@all"]
    for user in USERS:
        if user == "health":
            rules = "resetkeys -@all +ping"
        elif user == "keda":
            keys = " ".join(f"%R~{pattern}" for pattern in KEYS)
            rules = f"resetkeys {keys} resetchannels {' '.join(KEDA_COMMANDS)}"
        else:
            keys = " ".join(f"~{pattern}" for pattern in KEYS)
            rules = f"resetkeys {keys} resetchannels {' '.join(COMMANDS)}"
        lines.append(f"user {user} on >{passwords[user]} {rules}")
    return "\n".join(lines) + "\n"


def env_file(passwords: Mapping[str, str]) -> str:
    """deploy/.env: the Redis passwords, and a key for the gateway (which listens beyond
    loopback inside its container)."""
    lines = [
        "# Secrets of a deployment (deploy/docker-compose.yml reads this file). Keep it private."
    ]
    lines += [f"{password_variable(u)}={p}" for u, p in passwords.items()]
    lines.append(f"MARIONETTE_GATEWAY_OPERATOR_KEY={secrets.token_urlsafe(32)}")
    return "\n".join(lines) + "\n"
