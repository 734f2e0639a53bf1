#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the integration tests, which start their own
# redis-server processes and simulators on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test "$@"
