#!/usr/bin/env bash
# Counts the instructions the gateway executes per stored single event, against a bare
# axum handler's per request, each under callgrind while wrk posts single events to it
# (the ingress benchmark's load: 64 connections, one account). Instruction counts do not
# move with the machine's load, so two builds can be compared exactly where CPU times are
# too noisy. System calls are not counted, for either.
#
#   scripts/gateway-cost.sh
#
# It is the `cost-gateway` phase of the relay benchmark (benches/cost/gateway.rs); it takes
# about a minute. Set GATEWAY_COST_OUT=<dir> to keep the dumps for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench --profile
cargo bench --bench relay --no-run
if [ -n "${GATEWAY_COST_OUT:-}" ]; then
  out=$GATEWAY_COST_OUT
  mkdir -p "$out"
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
log="$out/bench.out"
# The gateway stores into a redis-server: not the embedded backend.
unset ZENRELAY_BENCH_REDIS
if ! ZENRELAY_BENCH_CALLGRIND=$(cd "$out" && pwd) cargo bench --bench relay -- cost-gateway >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
sed -n 's/^cost  *//p' "$log"
