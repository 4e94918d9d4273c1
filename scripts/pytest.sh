#!/usr/bin/env bash
# Runs the Python client's tests (clients/python/tests) from .venv/ against real crmbus
# servers built from this repository: the tests start `target/debug/crmbus serve` on
# ephemeral ports with temporary data directories, and stop them. The Django test uses the
# PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) and a database of its own.
# scripts/services.sh installs the Python packages into .venv/; this script installs the
# client itself there (editable) when it is missing. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import httpx, pytest, cloudevents, django, psycopg" 2>/dev/null; then
    bash scripts/services.sh
fi
if [ ! -x target/debug/crmbus ]; then
    echo "pytest.sh: building target/debug/crmbus" >&2
    cargo build -p crmbus-cli
fi
# The client, editable, so the tests run this tree's code (and the crmbus-worker script
# and the pytest plugin are registered).
if ! "$venv/bin/python" -c "import crmbus, sys; sys.exit(0 if crmbus.__file__.startswith('$PWD/clients/python/src/') else 1)" 2>/dev/null; then
    echo "pytest.sh: installing clients/python into $venv (editable)" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e ./clients/python
fi

export CRMBUS_BIN="$PWD/target/debug/crmbus"
exec "$venv/bin/python" -m pytest clients/python/tests -p no:cacheprovider -o faulthandler_timeout=300 "$@"
