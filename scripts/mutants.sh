#!/usr/bin/env bash
# Durability mutation check: removes, one at a time, every fsync, fdatasync and directory
# fsync the embedded log makes (each call through its Storage seam), rebuilds, and runs the
# power-loss simulation and the storage defect tests against the mutant. A mutant that no
# test kills is a durability step nothing checks. Prints one line per mutant and a summary;
# exits 1 if any mutant survives.
#
#   bash scripts/mutants.sh                 # every site, 500 power cuts per mutant
#   CRMBUS_SIM_CRASHES=2000 bash scripts/mutants.sh
#
# Not part of scripts/test.sh (about a minute per mutant on two cores).
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
    if ! cargo build -q -p crmbus-embedded --tests 2>/dev/null; then
        echo "skip     $site (mutant does not build): $what"
        cp "$backup/file" "$current"
        continue
    fi
    killer=""
    for t in storage_defects power_loss; do
        if ! CRMBUS_SIM_CRASHES=$crashes CRMBUS_SIM_SEED=$seed \
            cargo test -q -p crmbus-embedded --test "$t" >"$backup/out" 2>&1; then
            killer=$(grep -m1 -oE -- "---- [a-z_0-9]+ stdout ----" "$backup/out" \
                | sed -E 's/^---- ([a-z_0-9]+).*/\1/' || true)
            killer="$t::${killer:-?}"
            break
        fi
    done
    cp "$backup/file" "$current"
    if [ -n "$killer" ]; then
        killed=$((killed + 1))
        echo "killed   $site by $killer: $what"
    else
        survived=$((survived + 1))
        echo "SURVIVED $site: $what"
    fi
done
current=""
echo "mutants: $killed killed, $survived survived (seed $seed, $crashes power cuts each)"
[ "$survived" -eq 0 ]
