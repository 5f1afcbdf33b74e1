#!/usr/bin/env bash
# The pass-through harness (benches/passthrough.rs) in one command: installs
# nginx (the plain-proxy baseline) when it is missing and we are root, then
# runs the bench. Arguments and CALLS/CONCURRENCY/SERVER_CPU/CLIENT_CPUS
# pass through. Results: docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing nginx (the plain-proxy baseline)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null
    else
        echo "nginx is missing and we are not root: install it (apt-get install nginx-light)" >&2
        exit 1
    fi
fi
exec cargo bench --bench passthrough "$@"
