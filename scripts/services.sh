#!/usr/bin/env bash
# Makes sure the external services the test suite needs are installed and running.
#
# The current suite (core library, in-memory and embedded backends, CLI) needs none: the
# embedded log is crmbus's own storage. Backends that talk to a server (Redis Streams,
# NATS JetStream, ...) add their check/install/start step here, each idempotent:
# check -> `apt-get update && apt-get install -y <pkg>` if missing -> start if not running.
set -euo pipefail

need_cmd() {
    command -v "$1" >/dev/null 2>&1
}

# Build tools the workspace itself needs (a C compiler for crates that build C code).
if ! need_cmd cc; then
    echo "services.sh: installing a C compiler" >&2
    apt-get update -qq && apt-get install -y -qq gcc >/dev/null
fi

echo "services.sh: no external services needed by the current test suite"
