#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, and all tests.
# This is the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
sum() { grep -E '^test result:' "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
if [ "$status" -ne 0 ]; then
    echo
    echo "tests: $(sum passed) passed, $(sum failed) failed"
    exit "$status"
fi

echo "== schemathesis against /openapi.json"
bash scripts/schemathesis.sh target/debug/crmbus

echo
echo "tests: $(sum passed) passed, $(sum failed) failed; schemathesis passed"
