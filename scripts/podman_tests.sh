#!/usr/bin/env bash
# Integration tests with testcontainers on podman's socket (the suite's Redis in a container,
# as the design card has it), instead of the redis-server binary the suite falls back to.
#   bash scripts/podman_tests.sh [PYTEST ARGS]   (default: the bus's fault and lease tests)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -x .venv/bin/marionette ] || source scripts/bootstrap.sh "test"
source scripts/container_engine.sh
source scripts/local_images.sh
local_images redis
export MARIONETTE_TEST_REDIS_IMAGE=localhost/marionette-redis:7
# No registry: no Ryuk reaper image (the fixture stops its container itself). This machine
# may itself be a container: connect to the published port on the host, not a bridge IP.
export TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_CONNECTION_MODE=docker_host
TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=(tests/integration/test_hash_slots.py
    tests/integration/test_crash_recovery.py tests/integration/test_leases.py
    tests/integration/test_record_replay.py)
echo "== pytest on podman's Redis ($MARIONETTE_TEST_REDIS_IMAGE)"
status=0
.venv/bin/pytest -q -p no:cacheprovider "${TESTS[@]}" || status=$?
stop_own_podman_service
exit "$status"
