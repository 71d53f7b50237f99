# Sourced: `local_images [--rebuild] NAME...` builds what deploy/ runs, with no registry:
#   base        Debian 12 with Python (scripts/container_base.sh, mmdebstrap)
#   marionette  deploy/Dockerfile on that base (the host's pip cache mounted: a wheel built
#               once, llama-cpp-python's, is not built again)
#   redis, prometheus   deploy/local/NAME.Containerfile on that base
# base, redis and prometheus are kept once built (unless --rebuild); marionette is built each
# time, from podman's layer cache when the code did not change.
LOCAL_BASE=localhost/marionette-base:bookworm
declare -A LOCAL_IMAGE=(
    [marionette]=localhost/marionette:latest
    [redis]=localhost/marionette-redis:7
    [prometheus]=localhost/marionette-prometheus:local
)
local_images() {
    local rebuild=0 name image
    if [ "${1:-}" = --rebuild ]; then rebuild=1; shift; fi
    _wanted() { [ "$rebuild" = 1 ] || ! podman image exists "$1"; }
    if _wanted "$LOCAL_BASE"; then
        echo "== building $LOCAL_BASE (mmdebstrap)"
        bash scripts/container_base.sh "$LOCAL_BASE"
    fi
    for name in "$@"; do
        [ "$name" = base ] && continue
        image="${LOCAL_IMAGE[$name]}"
        [ "$name" = marionette ] || _wanted "$image" || continue
        echo "== building $image"
        if [ "$name" = marionette ]; then
            mkdir -p "$HOME/.cache/pip"
            podman build --quiet --build-arg BASE="$LOCAL_BASE" \
                -v "$HOME/.cache/pip:/root/.cache/pip" -f deploy/Dockerfile -t "$image" . >/dev/null
        else
            podman build --quiet --build-arg BASE="$LOCAL_BASE" \
                -f "deploy/local/$name.Containerfile" -t "$image" deploy/local >/dev/null
        fi
    done
}
