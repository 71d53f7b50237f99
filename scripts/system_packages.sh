# Sourced by test.sh (and run.sh): the system packages the tests need: PortAudio (speakers
# and microphones through sounddevice), Opus (the Discord stage's voice). Installed with apt
# when missing and we are root.
if ! ldconfig -p 2>/dev/null | grep -q 'libopus\.so\.0'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing libopus0 (apt)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopus0 >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopus0 >/dev/null; }
    else
        echo "libopus0 is missing: install it (apt-get install libopus0) for Discord voice" >&2
    fi
fi
if ! ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing libportaudio2 (apt)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q libportaudio2 >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -q libportaudio2 >/dev/null; }
    else
        echo "libportaudio2 is missing: install it (apt-get install libportaudio2) for the audio device tests" >&2
    fi
fi

# promtool checks observability/prometheus.yml and the dashboard's queries. Only the tool is
# wanted, not the Prometheus service: unpack Debian's package into a cache, put it on PATH.
PROMTOOL_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/marionette/promtool"
if ! command -v promtool >/dev/null && [ ! -x "$PROMTOOL_DIR/usr/bin/promtool" ] \
        && command -v apt-get >/dev/null; then
    echo "== fetching promtool (Debian's prometheus package, unpacked, not installed)"
    mkdir -p "$PROMTOOL_DIR"
    ( cd "$PROMTOOL_DIR" \
        && { apt-get download -q prometheus >/dev/null 2>&1 \
             || { apt-get update -q >/dev/null && apt-get download -q prometheus >/dev/null; }; } \
        && dpkg -x prometheus_*.deb . && rm -f prometheus_*.deb ) \
        || echo "could not fetch promtool; the promtool checks will be skipped" >&2
fi
if [ -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
    export PATH="$PROMTOOL_DIR/usr/bin:$PATH"
fi

# Chromium for the pages' browser tests (Playwright drives Debian's build: `playwright
# install` would download its own, which this project does not rely on).
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing chromium (apt)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
    else
        echo "chromium is missing: install it (apt-get install chromium) for the browser tests" >&2
    fi
fi
