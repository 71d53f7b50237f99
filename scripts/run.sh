#!/usr/bin/env bash
# Run Marionette on its embedded defaults: `bash scripts/run.sh` (arguments go to `marionette up`).
source "$(dirname "$0")/bootstrap.sh" ""
exec .venv/bin/marionette up "$@"
