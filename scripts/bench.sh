#!/usr/bin/env bash
# Runs the relay benchmarks (release build) and prints figures and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench
cargo bench --bench relay "$@"
