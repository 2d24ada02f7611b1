#!/usr/bin/env bash
# timm's own model tests (tests/test_models.py from the source distribution of the installed timm version) on every
# RepLKNet and UniRepLKNet variant that erftools registers with timm. The sdist comes from the package registry (the
# one network access); the tests themselves run offline. Exits non-zero when a test fails.
#   bash .ci/timm_suite.sh [extra pytest args]     (PYTHON=... to use another interpreter than .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(cd "$(dirname "${PYTHON:-.venv/bin/python}")" && pwd)/$(basename "${PYTHON:-.venv/bin/python}")
VERSION=$("$PY" -c "import timm; print(timm.__version__)")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PY" -m pip download --quiet --no-deps --no-binary :all: "timm==$VERSION" -d "$WORK/sdist"
tar -xzf "$WORK"/sdist/timm-*.tar.gz -C "$WORK"
SRC=$(echo "$WORK"/timm-*/)
test -f "$SRC/tests/test_models.py" || { echo "timm_suite: no tests/test_models.py in the timm $VERSION sdist" >&2; exit 1; }

# Loaded before tests/test_models.py is collected: its parametrisation lists timm's models at import time.
cat > "$SRC/conftest.py" <<'PYEOF'
import erftools.models  # noqa: F401  (registers replknet_* and unireplknet_* with timm)


def pytest_configure(config):
    # timm's tests carry pytest-timeout marks; the plugin is not needed here (the whole run has a time limit)
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")
PYEOF

# Offline: no hub, an empty weight cache, and a dead proxy for anything that would still try to download.
export HF_HUB_OFFLINE=1 TORCH_HOME="$WORK/torch" HF_HOME="$WORK/hf" ERFTOOLS_CACHE="$WORK/erftools"
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 \
  https_proxy=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

# Deselected by name: test_model_load_pretrained and test_model_features_pretrained download each variant's
# pretrained weights (the OpenMMLab files, 0.3-1.3 GB) and cannot run offline; the same loading path (timm's
# load_pretrained through pretrained_cfg_overlay=dict(file=...), and a hash-checked URL download from a loopback
# server) is covered by tests/models/test_timm_conformance.py.
# Nothing else is excluded: every variant, XL included, runs at timm's test resolutions (<= 384 px, batch 1-2).
cd "$SRC"
echo "timm_suite: timm $VERSION tests/test_models.py -k replknet, unireplknet"
timeout "${TIMM_SUITE_TIMEOUT:-3000}" "$PY" -m pytest tests/test_models.py -p no:cacheprovider -q -rfE \
  -k "(replknet or unireplknet) and not test_model_load_pretrained and not test_model_features_pretrained" "$@"
