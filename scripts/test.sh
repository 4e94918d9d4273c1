#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, and all tests.
# This is the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

echo "== cargo fmt --check"
cargo fmt --all --check

# --all-features: the tests that need the live Redis and NATS started above sit behind the
# crates' integration features (crmbus-redis/crmbus-nats `integration`, crmbus-server
# `redis-integration` and `nats-integration`); every feature is on here, so every test is
# linted and run.
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# Every test binary runs even after a failure, so one failure does not hide the others.
# The power-loss simulation runs on its own below, so its seed and counts are printed.
cargo test --workspace --all-features --no-fail-fast -- --skip acknowledged_events_survive_every_simulated_power_cut 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "== power-loss simulation (${CRMBUS_SIM_CRASHES:-2000} power cuts; replay with CRMBUS_SIM_SEED)"
cargo test -p crmbus-embedded --test power_loss -- --nocapture acknowledged_events_survive_every_simulated_power_cut 2>&1 | tee -a "$log"
sim_status=${PIPESTATUS[0]}
[ "$status" -ne 0 ] || status=$sim_status
set -e
sum() { grep -E '^test result:' "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
if [ "$status" -ne 0 ]; then
    echo
    echo "tests: $(sum passed) passed, $(sum failed) failed"
    exit "$status"
fi

pylog=$(mktemp)
brlog=$(mktemp)
trap 'rm -f "$log" "$pylog" "$brlog"' EXIT

# Runs a test step's script ($2) with its output also in a log ($1); answers its status.
step() {
    set +e
    bash "$2" 2>&1 | tee "$1"
    local status=${PIPESTATUS[0]}
    set -e
    return "$status"
}
# After a step: its counts join the totals; a failed step ends the run with them.
settle() {
    if [ "$1" -ne 0 ]; then
        echo
        echo "tests: $passed passed, $failed failed"
        exit "$1"
    fi
}

echo "== pytest: the Python client (clients/python) against real crmbus servers"
py_status=0
step "$pylog" scripts/pytest.sh || py_status=$?
# pytest's closing line: "== 25 passed, 1 failed, 2 errors in 9.1s ==". One awk, not a
# pipeline of greps: a grep that finds no "failed" would end the script under pipefail.
py_sum() {
    awk -v what="$1" '
        /^=* ?[0-9]+ (passed|failed|errors?|skipped|deselected)/ { line = $0 }
        END {
            n = 0
            while (match(line, /[0-9]+ [a-z]+/)) {
                split(substr(line, RSTART, RLENGTH), word, " ")
                if (word[2] == what || word[2] == what "s") n += word[1]
                line = substr(line, RSTART + RLENGTH)
            }
            print n
        }' "$pylog"
}
passed=$(( $(sum passed) + $(py_sum passed) ))
failed=$(( $(sum failed) + $(py_sum failed) + $(py_sum error) ))
settle "$py_status"

echo "== browser: the web console in headless Chromium against a real crmbus server"
br_status=0
step "$brlog" scripts/browser.sh || br_status=$?
# node's test runner closes with "ℹ pass 9", "ℹ fail 0" and "ℹ cancelled 0" lines.
br_sum() { awk -v what="$1" '$1 == "ℹ" && $2 == what { n = $3 } END { print n + 0 }' "$brlog"; }
passed=$(( passed + $(br_sum pass) ))
failed=$(( failed + $(br_sum fail) + $(br_sum cancelled) ))
settle "$br_status"
echo "browser: screenshots of every console page in target/console-screenshots/"

echo "== schemathesis against /openapi.json"
bash scripts/schemathesis.sh target/debug/crmbus

echo
echo "tests: $passed passed, $failed failed; schemathesis passed"
