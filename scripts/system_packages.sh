# Sourced by test.sh: the one system library the tests need, PortAudio (speakers and
# microphones through sounddevice). Installed with apt when missing and we are root.
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
