#!/usr/bin/env bash
# One entry point for the common tasks; each sets everything up first (a virtual environment in .venv).
#   bash tasks.sh erf [ARGS...]        set up, then `erftools erf --model replknet-31B ARGS...`
#   bash tasks.sh test [PYTEST ARGS]   set up, then run the test suite
#   bash tasks.sh dashboard [ARGS...]  set up, then open the dashboard on the example results
#   bash tasks.sh setup                only set up
# ERFTOOLS_TORCH=cpu bash tasks.sh setup   installs PyTorch's CPU-only build first (no 3 GB of CUDA libraries)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || { echo "tasks.sh: python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
  fi
  local stamp="$VENV/.erftools-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "tasks.sh: installing erftools and its dependencies (torch, timm, streamlit, matplotlib, scipy and the test tools)" \
         "into $VENV. With PyPI's default torch on Linux this is about 6 GB, 3 GB of it CUDA libraries, and takes" \
         "a few minutes; pip shows its progress below." >&2
    if [ "${ERFTOOLS_TORCH:-}" = cpu ]; then
      echo "tasks.sh: ERFTOOLS_TORCH=cpu: PyTorch's CPU-only build first (https://download.pytorch.org/whl/cpu)" >&2
      "$VENV/bin/python" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
    elif [ "$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then
      echo "tasks.sh: no NVIDIA GPU found; to skip the CUDA libraries: rm -rf $VENV && ERFTOOLS_TORCH=cpu bash tasks.sh setup" >&2
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install --progress-bar on -e ".[test]"
    touch "$stamp"
    echo "tasks.sh: installed ($(du -sh "$VENV" 2>/dev/null | cut -f1) in $VENV)" >&2
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  erf) setup; exec "$VENV/bin/erftools" erf --model replknet-31B "$@" ;;
  dashboard) setup; exec "$VENV/bin/erftools" dashboard "$@" ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
