#!/usr/bin/env bash
# Checks that the running server matches its own OpenAPI document: the document is valid
# OpenAPI 3.x, and schemathesis (property-based requests generated from it) finds no server
# error, no undocumented status or content type, and no response that breaks its schema.
# Live streams (/stream, /ws) never end, so they are left to the Rust tests.
#
# Usage: scripts/schemathesis.sh [path/to/crmbus]   (default: target/debug/crmbus)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/debug/crmbus}
# The tools live in the virtualenv scripts/services.sh installs them into.
venv=.venv
if [ ! -x "$venv/bin/st" ]; then
    echo "schemathesis.sh: $venv/bin/st is missing: run scripts/services.sh first" >&2
    exit 1
fi
work=$(mktemp -d)
# Webhooks may reach 127.0.0.1 only (the seed's webhook fixture points there).
CRMBUS_PUSH_ALLOWED_TARGETS=127.0.0.1 \
    "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" 2>"$work/serve.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

url=""
for _ in $(seq 1 200); do
    url=$(grep -o 'http://[0-9.]*:[0-9]*' "$work/serve.log" | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "schemathesis.sh: the server did not start:" >&2
    cat "$work/serve.log" >&2
    exit 1
fi

"$venv/bin/python" - "$url/openapi.json" <<'PY'
import json, sys, urllib.request
from openapi_spec_validator import validate
doc = json.load(urllib.request.urlopen(sys.argv[1]))
validate(doc)
print(f"openapi: valid OpenAPI {doc['openapi']}, {len(doc['paths'])} paths")
PY

"$venv/bin/python" scripts/schemathesis_seed.py "$url" "$work/key"
# The seed's admin key goes with every request (the server needs one once a key exists).
auth="Authorization: Bearer $(cat "$work/key")"

# Every phase (examples from the document, boundary coverage, random fuzzing, and stateful
# sequences that follow the document's links) with every data check: valid requests must be
# accepted (positive_data_acceptance) and invalid ones rejected (negative_data_rejection).
# The seed is fixed so a run replays; the cassette records every request and answer.
# A pull may long-poll for up to 30 s (wait_ms ≤ 30000), so a request gets 40 s.
exclude='/stream$|/ws$'
set +e
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=scripts "$venv/bin/st" --config-file scripts/schemathesis.toml run "$url/openapi.json" \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples 15 \
    --request-timeout 40 \
    --seed 7480 \
    --generation-database none \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,positive_data_acceptance,negative_data_rejection \
    --exclude-path-regex "$exclude" \
    --header "$auth" \
    --report vcr --report-vcr-path "$work/cassette.yaml" \
    --no-color >"$work/st.out" 2>&1
st_status=$?
set -e
# Kept for reading after the run (target/ is ignored by git).
mkdir -p target/schemathesis
cp "$work/st.out" "$work/cassette.yaml" target/schemathesis/
tail -40 "$work/st.out"
echo "(full output and cassette: target/schemathesis/)"
echo "== schemathesis: status counts per operation (from the cassette)"
"$venv/bin/python" scripts/schemathesis_summary.py "$url/openapi.json" "$work/cassette.yaml" "$exclude"
if [ "$st_status" -ne 0 ]; then
    echo "schemathesis.sh: st run failed (exit $st_status); see the failures above" >&2
    exit "$st_status"
fi
