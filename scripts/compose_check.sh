#!/usr/bin/env bash
# deploy/docker-compose.yml, run for real with podman (no Docker engine and no registry needed):
#  1. images: a Debian base (scripts/container_base.sh), Marionette (deploy/Dockerfile), and
#     Redis and Prometheus from that base (deploy/local/), unless they exist (--rebuild);
#  2. the stack comes up (podman-compose) and every stage reports ready (/readyz);
#  3. a chat turn (POST /api/chat) and a spoken turn (`marionette mic` over /ws/audio, the
#     sample WAV) are answered: replies land as WAV files;
#  4. `--scale tts=2`: the two replicas share the partitions;
#  5. a stage container is SIGKILLed and comes back (restart: unless-stopped);
#  6. Prometheus (profile observability) scrapes every stage; `marionette trace` shows the turn;
#  7. everything is taken down (--keep leaves it running).
#   bash scripts/compose_check.sh [--keep] [--rebuild]
# About 6 minutes here with the images built, 10 more to build them (see docs/deploy.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KEEP=0 REBUILD=0
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        --rebuild) REBUILD=1 ;;
        *) echo "unknown option $arg (--keep, --rebuild)" >&2; exit 2 ;;
    esac
done

PROJECT=marionette-check
START=$SECONDS
say() { printf '== [%4ds] %s\n' $((SECONDS - START)) "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

source scripts/container_engine.sh
source scripts/local_images.sh
[ -x .venv/bin/marionette ] || source scripts/bootstrap.sh ""   # .venv with marionette: the host's end (mic, redis-acl)
TOOLS=".cache/compose-tools"
if [ ! -x "$TOOLS/bin/podman-compose" ]; then
    python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install --quiet podman-compose==1.6.0
fi
COMPOSE=("$TOOLS/bin/podman-compose" -p "$PROJECT" -f deploy/docker-compose.yml)

# --- 1. images -------------------------------------------------------------------------
say "images"
if [ "$REBUILD" = 1 ]; then
    local_images --rebuild marionette redis prometheus
else
    local_images marionette redis prometheus
fi
export MARIONETTE_IMAGE="${LOCAL_IMAGE[marionette]}"
export MARIONETTE_REDIS_IMAGE="${LOCAL_IMAGE[redis]}"
export MARIONETTE_PROMETHEUS_IMAGE="${LOCAL_IMAGE[prometheus]}"

# --- 2. up -----------------------------------------------------------------------------
[ -f deploy/.env ] || { say "new Redis passwords and operator key in deploy/.env"
    .venv/bin/marionette redis-acl --new-env > deploy/.env; chmod 600 deploy/.env; }
KEY="$(sed -n 's/^MARIONETTE_GATEWAY_OPERATOR_KEY=//p' deploy/.env)"
down() {  # the project's containers (scaled ones too) and volumes
    "${COMPOSE[@]}" --profile observability down -v >/dev/null 2>&1 || true
    podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman rm -f -t 2 >/dev/null
    podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman volume rm -f >/dev/null
}
[ "$KEEP" = 1 ] || trap 'down; stop_own_podman_service' EXIT
down
say "compose up"
# podman-compose turns depends_on into `podman --requires`, and podman does not restart a
# container whose requirement has exited (redis-acl is done once the ACL file is written).
# So the one-shot goes first, then the rest without --requires; the stages wait for Redis.
"${COMPOSE[@]}" up -d --no-build redis-acl >/dev/null 2>&1
podman wait "${PROJECT}_redis-acl_1" >/dev/null
"${COMPOSE[@]}" up -d --no-build --no-deps >/dev/null 2>&1 \
    || { "${COMPOSE[@]}" logs | tail -40; fail "up"; }

STAGES=(asr policy tts avatar playback monitor gateway)
container() { echo "${PROJECT}_$1_${2:-1}"; }
# podman 4 runs healthchecks from systemd timers; without systemd, run the compose
# healthcheck (curl /readyz) ourselves.
ready() { podman healthcheck run "$1" >/dev/null 2>&1; }
wait_ready() {  # CONTAINER... within 300 s
    local deadline=$((SECONDS + 300)) c
    for c in "$@"; do
        until ready "$c"; do
            [ $SECONDS -lt $deadline ] || { podman logs --tail 30 "$c"; fail "$c not ready"; }
            sleep 2
        done
    done
}
wait_ready $(for s in "${STAGES[@]}"; do container "$s"; done)
say "all stages ready: $(podman ps --filter "label=io.podman.compose.project=$PROJECT" \
    --format '{{.Names}}' | sort | tr '\n' ' ')"

# --- 3. a chat turn and a spoken turn ---------------------------------------------------
api() { curl -fsS -H "Authorization: Bearer $KEY" -H 'content-type: application/json' "$@"; }
wav_count() {  # SESSION: reply WAVs playback wrote for it
    podman exec "$(container playback)" sh -c "ls /playback/$1 2>/dev/null | wc -l"
}
wait_wavs() {  # SESSION COUNT
    local deadline=$((SECONDS + 180))
    until [ "$(wav_count "$1")" -ge "$2" ]; do
        [ $SECONDS -lt $deadline ] || { podman logs --tail 20 "$(container policy)";
                                         fail "no reply for $1"; }
        sleep 1
    done
}
say "chat turn: POST /api/chat"
sent=$SECONDS
api -X POST http://127.0.0.1:8765/api/chat \
    -d '{"session": "compose-chat", "author": "viewer", "text": "Hello! What is your name?"}' \
    >/dev/null
wait_wavs compose-chat 1
say "chat turn answered in $((SECONDS - sent)) s: $(podman logs "$(container monitor)" 2>&1 \
    | grep -a 'policy.token *compose-chat/.* final' | tail -1 | cut -c1-160)"

say "spoken turn: marionette mic --input sample_conversation.wav over /ws/audio"
MIC_DIR="$(mktemp -d)"
timeout 240 .venv/bin/marionette mic --key "$KEY" --session compose-voice --output wav \
    --out-dir "$MIC_DIR" --input services/capture/assets/sample_conversation.wav \
    --duration 60 >/dev/null 2>&1 || true
voice=$(find "$MIC_DIR" -name '*.wav' | wc -l)
[ "$voice" -ge 1 ] || fail "the spoken turn got no reply"
say "spoken turn answered: $voice reply WAVs back through the gateway's remote speaker"

# --- 4. two tts replicas share the partitions -----------------------------------------
say "scale tts to 2"
"${COMPOSE[@]}" up -d --no-build --no-deps --scale tts=2 tts >/dev/null 2>&1
wait_ready "$(container tts 1)" "$(container tts 2)"
deadline=$((SECONDS + 60))
for n in 1 2; do
    until podman exec "$(container tts $n)" curl -fsS http://127.0.0.1:9464/readyz \
            | grep -q '"partitions_held": \[[0-9]'; do
        [ $SECONDS -lt $deadline ] || fail "tts_$n holds no partition"
        sleep 1
    done
    say "tts_$n holds $(podman exec "$(container tts $n)" curl -fsS http://127.0.0.1:9464/readyz \
        | sed 's/.*"partitions_held": \(\[[^]]*\]\).*/\1/')"
done
api -X POST http://127.0.0.1:8765/api/chat \
    -d '{"session": "compose-scaled", "author": "viewer", "text": "Tell me a fun fact."}' >/dev/null
wait_wavs compose-scaled 1
say "answered with two tts replicas"

# --- 5. a SIGKILLed stage comes back ----------------------------------------------------
victim="$(container policy)"
restarts() { podman inspect -f '{{.RestartCount}}' "$victim"; }
before=$(restarts)
say "SIGKILL $victim (pid $(podman inspect -f '{{.State.Pid}}' "$victim") on the host)"
kill -9 "$(podman inspect -f '{{.State.Pid}}' "$victim")"
deadline=$((SECONDS + 120))
until [ "$(restarts)" -gt "$before" ] && ready "$victim"; do
    [ $SECONDS -lt $deadline ] || fail "$victim was not replaced"
    sleep 2
done
say "$victim restarted (restart count $(restarts)) and ready"
api -X POST http://127.0.0.1:8765/api/chat \
    -d '{"session": "compose-after-kill", "author": "viewer", "text": "Are you back?"}' >/dev/null
wait_wavs compose-after-kill 1
say "answered after the kill"

# --- 6. Prometheus scrapes every stage; the trace of a turn -----------------------------
say "Prometheus (profile observability)"
"${COMPOSE[@]}" --profile observability up -d --no-build --no-deps prometheus >/dev/null 2>&1
deadline=$((SECONDS + 90))
query() { curl -fsS --get http://127.0.0.1:9090/api/v1/query --data-urlencode "query=$1"; }
until [ "$(query 'count(up{job="marionette"} == 1)' | sed -n 's/.*"value":\[[^,]*,"\([0-9]*\)".*/\1/p')" \
        = "$(( ${#STAGES[@]} + 1 ))" ]; do
    [ $SECONDS -lt $deadline ] || { query 'up'; fail "Prometheus does not scrape every stage"; }
    sleep 3
done
say "Prometheus scrapes $(( ${#STAGES[@]} + 1 )) targets, all up; handled by stage: $(query \
    'sum by (stage) (marionette_consumed_messages_total{outcome="handled"})' \
    | grep -o '"stage":"[a-z]*"},"value":\[[^,]*,"[0-9]*"' | sed 's/"stage":"\([a-z]*\)"},"value":\[[^,]*,"\([0-9]*\)"/\1=\2/' | tr '\n' ' ')"
say "the chat turn's trace (marionette trace, from the shared traces volume):"
podman exec "$(container monitor)" marionette trace --last 1 2>/dev/null | head -30 || true
say "compose check passed in $((SECONDS - START)) s"
