#!/usr/bin/env bash
# Counts the instructions the gateway executes under callgrind: per stored single event,
# against a bare axum handler's per request, while wrk posts single events to each (the
# ingress benchmark's load: 64 connections, one account); and per delivered Notify call,
# draining a backlog of 2,000 accounts x 3 events to an instant receiver. Instruction
# counts do not move with the machine's load, so two builds can be compared exactly where
# CPU times are too noisy. System calls are not counted.
#
#   scripts/gateway-cost.sh
#
# It is the `cost-gateway` phase of the relay benchmark (benches/cost/gateway.rs); it takes
# about a minute. Set GATEWAY_COST_OUT=<dir> to keep the dumps for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench --profile
source scripts/cost-phases.sh
run_cost_phases "${GATEWAY_COST_OUT:-}" cost-gateway
