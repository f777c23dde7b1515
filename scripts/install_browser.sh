#!/usr/bin/env bash
# Install what tests/host/test_browser.py needs: Debian's Chromium (system package) and the
# Playwright Python package (a driver only: `playwright install` is never run, the test points
# Playwright at /usr/bin/chromium). Idempotent: does nothing when both are present.
#
#   INVERSE_HOME=...   where setup.sh made the venv (default ~/.cache/comfyui-inverse)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INVERSE_HOME="${INVERSE_HOME:-$HOME/.cache/comfyui-inverse}"
PY="${INVERSE_PYTHON:-$INVERSE_HOME/venv/bin/python}"
CHROMIUM=/usr/bin/chromium
# Keep in step with the "test" extra of pyproject.toml.
PLAYWRIGHT_PIN="$(grep -oE '"playwright[=<>~!]=?[^"]*"' "$REPO/pyproject.toml" | tr -d '"' || true)"
PLAYWRIGHT_PIN="${PLAYWRIGHT_PIN:-playwright==1.55.0}"

if [[ ! -x "$CHROMIUM" ]]; then
    echo "== chromium (apt)"
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
fi
"$CHROMIUM" --version 2>/dev/null | grep -i chromium || { echo "chromium did not install" >&2; exit 1; }

if [[ ! -x "$PY" ]]; then
    echo "no venv python at $PY: run scripts/setup.sh first (or set INVERSE_PYTHON)" >&2
    exit 1
fi
if ! "$PY" -c "import playwright.sync_api" 2>/dev/null; then
    echo "== $PLAYWRIGHT_PIN (pip)"
    "$PY" -m pip install --disable-pip-version-check "$PLAYWRIGHT_PIN"
fi
echo "browser ready: $CHROMIUM + $("$PY" -m pip show playwright 2>/dev/null | grep -i '^version' || echo playwright)"
