# Sourced by compose_check.sh and podman_tests.sh: a container engine without Docker.
# podman (with runc and cgroupfs, which work where systemd does not run), mmdebstrap for the
# base image, and podman's Docker-compatible socket for the docker CLI and testcontainers.
# Installs with apt when missing and we are root.
if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing podman, runc, mmdebstrap (apt)"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc mmdebstrap >/dev/null
    else
        echo "podman and mmdebstrap are missing: apt-get install podman runc mmdebstrap" >&2
        exit 2
    fi
fi
# Debian's defaults assume systemd and settable ulimits; a container host without them
# (CI machines, containers themselves) needs runc, cgroupfs and no default ulimits.
if [ ! -e /etc/containers/containers.conf ] && [ "$(id -u)" = 0 ]; then
    echo "== writing /etc/containers/containers.conf (runc, cgroupfs, no default ulimits)"
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' \
        > /etc/containers/containers.conf
fi
PODMAN_SOCKET="${PODMAN_SOCKET:-/run/podman/podman.sock}"
export DOCKER_HOST="unix://$PODMAN_SOCKET"
PODMAN_SERVICE_PID=""
if ! curl -fsS --unix-socket "$PODMAN_SOCKET" http://d/_ping >/dev/null 2>&1; then
    mkdir -p "$(dirname "$PODMAN_SOCKET")"
    # In a session of its own, with no stdio of the caller's. Stopped by the script that
    # started it (stop_own_podman_service): one left running after its caller had exited
    # answered pings but failed to start containers ("write child: broken pipe").
    setsid nohup podman system service --time=0 "$DOCKER_HOST" </dev/null >/dev/null 2>&1 &
    PODMAN_SERVICE_PID=$!
    for _ in $(seq 50); do
        curl -fsS --unix-socket "$PODMAN_SOCKET" http://d/_ping >/dev/null 2>&1 && break
        sleep 0.2
    done
fi

stop_own_podman_service() {
    if [ -n "$PODMAN_SERVICE_PID" ]; then
        kill "$PODMAN_SERVICE_PID" 2>/dev/null || true
    fi
}
