#!/usr/bin/env bash
# Durability mutation check. Two kinds of mutant, each built and tested on its own:
#  - every fsync, fdatasync and directory fsync the embedded log makes (each call through
#    its Storage seam) removed, one at a time;
#  - every ordering step in scripts/mutants/*.patch undone (lost journal intents cut, index
#    after data, rename after fsync, a new store built under a temporary name).
# Each mutant runs the storage defect tests and the power-loss simulation. A mutant that
# no test kills is a durability step nothing checks. Prints one line per mutant (with the
# test that killed it) and a summary; exits 1 if any mutant survives or a patch no longer
# applies (a patch goes stale when the code it mutates changes: make it again).
#
# A call that cannot matter is marked `// mutants: equivalent` with the reason beside it,
# and an ordering patch that cannot matter has an `# Equivalent:` line saying why: both
# are listed, not run.
#
#   bash scripts/mutants.sh                 # every mutant, 500 power cuts each
#   CRMBUS_SIM_CRASHES=2000 bash scripts/mutants.sh
#
# Not part of scripts/test.sh (about a minute per mutant on two cores): run it weekly and
# after any change to crates/crmbus-embedded/src.
set -euo pipefail
cd "$(dirname "$0")/.."

src=crates/crmbus-embedded/src
crashes=${CRMBUS_SIM_CRASHES:-500}
seed=${CRMBUS_SIM_SEED:-20261201}
backup=$(mktemp -d)
restore() {
    if [ -n "${current:-}" ] && [ -f "$backup/file" ]; then
        cp "$backup/file" "$current"
    fi
    if [ -n "${applied:-}" ]; then
        patch -s -R -p1 <"$applied"
    fi
    rm -rf "$backup"
}
trap restore EXIT

# Every durability call outside the seam's own implementations: file:line. A call marked
# `// mutants: equivalent` (with the reason beside it) is listed, not mutated.
grep -rn -E '\.(sync_data|sync_all)\(\)|\.sync_dir\(' "$src" --include='*.rs' \
    | grep 'mutants: equivalent' | cut -d: -f1,2 | sed 's/^/equivalent /' || true
mapfile -t sites < <(grep -rn -E '\.(sync_data|sync_all)\(\)|\.sync_dir\(' "$src" \
    --include='*.rs' | grep -v "^$src/storage/" | grep -v -E '^\S+:\s*//' \
    | grep -v 'mutants: equivalent' | cut -d: -f1,2)

killed=0
survived=0
stale=0

# Builds the tree as it is now (one mutant applied) and runs the killers; sets `killer`
# to the first test that failed, or to "" if every test passed.
run_killers() {
    killer=""
    if ! cargo build -q -p crmbus-embedded --tests 2>/dev/null; then
        killer="-"
        return
    fi
    for t in storage_defects power_loss; do
        if ! CRMBUS_SIM_CRASHES=$crashes CRMBUS_SIM_SEED=$seed \
            cargo test -q -p crmbus-embedded --test "$t" >"$backup/out" 2>&1; then
            killer=$(grep -m1 -oE -- "---- [a-z_0-9]+ stdout ----" "$backup/out" \
                | sed -E 's/^---- ([a-z_0-9]+).*/\1/' || true)
            killer="$t::${killer:-?}"
            return
        fi
    done
}

# Counts and prints the outcome of one mutant.
report() {
    local name=$1 what=$2
    if [ "$killer" = "-" ]; then
        echo "skip     $name (mutant does not build): $what"
    elif [ -n "$killer" ]; then
        killed=$((killed + 1))
        echo "killed   $name by $killer: $what"
    else
        survived=$((survived + 1))
        echo "SURVIVED $name: $what"
    fi
}

for site in "${sites[@]}"; do
    current=${site%%:*}
    line=${site##*:}
    cp "$current" "$backup/file"
    # The call becomes a no-op of the same type: fsyncs become a length query, a directory
    # fsync becomes a listing.
    sed -i -E "${line}s/\.(sync_data|sync_all)\(\)/.len().map(|_| ())/; ${line}s/\.sync_dir\(([^()]*(\([^()]*\))?[^()]*)\)/.list_dir(\1).map(|_| ())/" "$current"
    if cmp -s "$current" "$backup/file"; then
        echo "skip     $site (no call rewritten)"
        continue
    fi
    what=$(sed -n "${line}p" "$backup/file" | sed -E 's/^\s+//')
    run_killers
    cp "$backup/file" "$current"
    report "$site" "$what"
done
current=""

for patch in scripts/mutants/*.patch; do
    name=$(basename "$patch" .patch)
    what=$(sed -n '1s/^# //p' "$patch")
    # A patch whose header says why it cannot matter is listed, not run.
    if grep -q '^# Equivalent:' "$patch"; then
        echo "equivalent $name: $what"
        continue
    fi
    if ! patch -s -p1 --dry-run <"$patch" >/dev/null 2>&1; then
        stale=$((stale + 1))
        echo "STALE    $name: the patch no longer applies"
        continue
    fi
    patch -s -p1 <"$patch"
    applied=$patch
    run_killers
    patch -s -R -p1 <"$patch"
    applied=""
    report "$name" "$what"
done

echo "mutants: $killed killed, $survived survived, $stale stale (seed $seed, $crashes power cuts each)"
[ "$survived" -eq 0 ] && [ "$stale" -eq 0 ]
