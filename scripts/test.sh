#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration tests (which start their own
# redis-server processes and simulators on free ports), then schemathesis against the
# gateway's own OpenAPI document (installed into target/test-tools by the scripts).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test "$@"
SCHEMATHESIS_MAX_TIME="${SCHEMATHESIS_MAX_TIME:-90}" scripts/schemathesis.sh
