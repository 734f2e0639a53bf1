#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration tests (which start their own
# redis-server processes and simulators on free ports, and drive a real Zendesk client,
# node-zendesk, through the proxy), then schemathesis against the gateway's own OpenAPI
# document. The tools are installed into target/test-tools by the scripts. Ends with one
# line giving the totals.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-test-tools.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test "$@" 2>&1 | tee "$log"
SCHEMATHESIS_MAX_TIME="${SCHEMATHESIS_MAX_TIME:-90}" scripts/schemathesis.sh
total() { grep -E '^test result:' "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
passed=$(total passed)
failed=$(total failed)
echo
echo "tests: ${passed} passed, ${failed} failed"
