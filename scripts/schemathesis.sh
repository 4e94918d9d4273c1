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
work=$(mktemp -d)
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

python3 - "$url/openapi.json" <<'PY'
import json, sys, urllib.request
from openapi_spec_validator import validate
doc = json.load(urllib.request.urlopen(sys.argv[1]))
validate(doc)
print(f"openapi: valid OpenAPI {doc['openapi']}, {len(doc['paths'])} paths")
PY

st run "$url/openapi.json" \
    --max-examples 20 \
    --seed 7480 \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --exclude-path-regex '/stream$|/ws$' \
    --no-color 2>&1 | tee "$work/st.out" | tail -25
grep -qE '[0-9]+ generated, [0-9]+ passed' "$work/st.out"
