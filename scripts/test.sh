#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration tests (which start their own
# redis-server processes and simulators on free ports, and drive a real Zendesk client,
# node-zendesk, through the proxy), then schemathesis against the gateway's own OpenAPI
# document. The tools are installed into target/test-tools by the scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-test-tools.sh
cargo test "$@"
SCHEMATHESIS_MAX_TIME="${SCHEMATHESIS_MAX_TIME:-90}" scripts/schemathesis.sh
