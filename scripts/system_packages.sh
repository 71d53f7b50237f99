# Sourced by test.sh: the system packages the tests need: Opus (the Discord stage's voice),
# PortAudio (speakers and microphones through sounddevice), promtool, Chromium. Installed
# with apt when missing and we are root.

# apt_install PACKAGE WHY: install a Debian package with apt when we are root (updating the
# lists once if the first try fails), else say what is missing and what it is for.
apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing $1 (apt)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null; }
    else
        echo "$1 is missing: install it (apt-get install $1) $2" >&2
    fi
}

ldconfig -p 2>/dev/null | grep -q 'libopus\.so\.0' || apt_install libopus0 "for Discord voice"
ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2' \
    || apt_install libportaudio2 "for the audio device tests"

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
command -v chromium >/dev/null || apt_install chromium "for the browser tests"
