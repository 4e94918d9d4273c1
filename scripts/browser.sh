#!/usr/bin/env bash
# Runs the console's browser tests (tests/browser/console.test.mjs): headless Debian
# Chromium, driven by playwright-core, against a real `target/debug/crmbus serve` on an
# ephemeral loopback port. Screenshots of every page at desktop and phone width are saved
# under target/console-screenshots/. scripts/services.sh installs Chromium and
# playwright-core; this script builds the binary first (incrementally).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || [ ! -d tests/browser/node_modules/playwright-core ]; then
    bash scripts/services.sh
fi
# Always (incremental): the console's files are compiled into the binary, so a stale
# binary would test stale pages.
cargo build -q -p crmbus-cli
export CRMBUS_BIN="$PWD/target/debug/crmbus"
cd tests/browser
exec node --test --test-concurrency=1 --test-reporter=spec "$@" console.test.mjs
