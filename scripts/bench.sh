#!/usr/bin/env bash
# Runs the benchmarks (release build) and prints figures and ratios against baselines
# measured in the same run: the relay (ingress, delivery, limiter, latency, memory), then
# the proxy. `scripts/bench.sh relay` or `scripts/bench.sh proxy` runs one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench
for bench in "${@:-relay proxy}"; do
  for name in $bench; do
    cargo bench --bench "$name"
  done
done
