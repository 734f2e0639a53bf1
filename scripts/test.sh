#!/usr/bin/env bash
# Runs the whole test suite: promtool on the alert rules under deploy/ (check and unit
# tests), unit tests, the integration tests (which start their own redis-server processes
# and simulators on free ports, drive a real Zendesk client, node-zendesk, through the
# proxy, the dashboard in headless Chromium, and the previous release's binary built from
# this repository's history for the upgrade tests), then schemathesis against the gateway's
# own OpenAPI document. The tools are installed by the scripts (into target/test-tools, or
# as Debian packages). Ends with one line giving the totals.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-test-tools.sh
# The upgrade tests run the previous release's binary: built (once, cached) before the
# suite starts, so its build does not compete with timed tests.
scripts/previous-release.sh > /dev/null
# A gateway built without the simulator (the `sim` feature) compiles and carries none of
# the crates only the simulator uses.
cargo check --quiet --no-default-features --lib --bin zenrelay
tree="$(cargo tree --quiet --no-default-features --edges normal --prefix none)"
for crate in rsa zip multer; do
  if grep -q "^$crate v" <<< "$tree"; then
    echo "a build without the sim feature still depends on $crate" >&2
    exit 1
  fi
done
promtool check rules deploy/prometheus/zenrelay-rules.yml
promtool test rules deploy/prometheus/zenrelay-rules.test.yml
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test "$@" 2>&1 | tee "$log"
SCHEMATHESIS_MAX_TIME="${SCHEMATHESIS_MAX_TIME:-90}" scripts/schemathesis.sh
total() { grep -E '^test result:' "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
passed=$(total passed)
failed=$(total failed)
echo
echo "tests: ${passed} passed, ${failed} failed"
