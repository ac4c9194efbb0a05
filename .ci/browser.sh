#!/usr/bin/env bash
# Browser test of the dashboard (.ci/browser/test_dashboard.py): builds the real `picloud`
# binary, which the test starts on a temp data dir with free ports, and drives Debian's headless
# Chromium through Selenium and chromedriver. Installs what is missing: `chromium` and
# `chromium-driver` with apt-get, Selenium (pinned) with pip into a venv under ~/.cache (outside
# the repo). Fails on any failed flow. Screenshots: BROWSER_OUT (default .ci/browser/out,
# ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

SELENIUM_VERSION=4.51.0
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/picloud/selenium-$SELENIUM_VERSION"

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "browser: installing chromium and chromium-driver"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  fi
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "browser: chromium and chromedriver are needed (apt-get install chromium chromium-driver)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -c "import selenium, sys; sys.exit(selenium.__version__ != '$SELENIUM_VERSION')" 2>/dev/null; then
  echo "browser: installing selenium $SELENIUM_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "selenium==$SELENIUM_VERSION"
fi

cargo build -q -p picloud-control --bin picloud
BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/picloud"
# Selenium must not look for drivers or browsers online: the paths are given.
export SE_OFFLINE=true
exec "$VENV/bin/python" .ci/browser/test_dashboard.py "$BIN"
