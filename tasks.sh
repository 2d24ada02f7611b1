#!/usr/bin/env bash
# One entry point for the common tasks; each sets everything up first (a virtual environment in .venv).
#   bash tasks.sh erf [ARGS...]        set up, then `erftools erf --model replknet-31B ARGS...`
#   bash tasks.sh test [PYTEST ARGS]   set up, then run the test suite
#   bash tasks.sh dashboard [ARGS...]  set up, then open the dashboard on the example results
#   bash tasks.sh setup                only set up
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || { echo "tasks.sh: python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
  fi
  local stamp="$VENV/.erftools-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    touch "$stamp"
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  erf) setup; exec "$VENV/bin/erftools" erf --model replknet-31B "$@" ;;
  dashboard) setup; exec "$VENV/bin/erftools" dashboard "$@" ;;
  *) sed -n '2,7p' "$0" >&2; exit 2 ;;
esac
