#!/usr/bin/env bash
# Runs the console's browser tests (tests/browser/console.test.mjs): headless Debian
# Chromium, driven by playwright-core, against a real `target/debug/crmbus serve` on an
# ephemeral loopback port. Screenshots of every page at desktop and phone width are saved
# under target/console-screenshots/. scripts/services.sh installs Chromium and
# playwright-core; this script builds the binary when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || [ ! -d tests/browser/node_modules/playwright-core ]; then
    bash scripts/services.sh
fi
if [ ! -x target/debug/crmbus ]; then
    echo "browser.sh: building target/debug/crmbus" >&2
    cargo build -p crmbus-cli
fi
export CRMBUS_BIN="$PWD/target/debug/crmbus"
cd tests/browser
exec node --test --test-concurrency=1 --test-reporter=spec "$@" console.test.mjs
