#!/usr/bin/env bash
# Counts the instructions Redis executes per unit of gateway work, with each workload's
# redis-server under callgrind. Instruction counts do not move with the machine's load, so
# two builds can be compared exactly where timings are too noisy: run it on each and
# compare the figures.
#
#   scripts/redis-cost.sh [workload ...]     (none named runs all, in this order)
#
#   ingress        one stored event: 16 clients posting single events over 200 accounts
#                  (2,000 events counted)
#   batch          one stored event, in batches of 1,000 (10 batches counted)
#   delivery-slow  one delivered Notify call: 200 accounts x 10 events, receiver answering
#                  in 5-20 ms (2,000 calls)
#   delivery       one delivered Notify call: 10,000 accounts x 3 events, instant receiver
#                  (30,000 calls)
#   delivery-limited  one delivered Notify call: 100 accounts x 10 events, each account
#                  allowed 1 call per 2 s window (its limit binds at every send), instant
#                  receiver (1,000 calls)
#   cluster        one delivered Notify call as in `delivery`, with 64 partitions, on one
#                  redis-server and on a Redis Cluster of three masters (each under
#                  callgrind, summed), and each master's share of the cluster's work
#   idle           Redis instructions per second one idle gateway (200 accounts, delivery
#                  on) adds: 10 s of Redis alone, then 10 s with the gateway, give the
#                  instructions per script call it makes; times the calls per second it
#                  makes to a plain redis-server in 10 s (under callgrind its polls wait on
#                  a slow Redis, so it makes fewer and a count per second would be too low)
#   ops            one /metrics scrape and one GET /v1/queues at 10,000 accounts with an
#                  event each
#
# Each is a `cost-*` phase of the relay benchmark (benches/cost/mod.rs), which starts its
# own redis-server under callgrind with instrumentation off and counts only the interval a
# figure names (`callgrind_control -z` right before the load, `-d` right after it; for
# delivery, from the first Notify call to the last answer), so start-up and the loading of
# backlogs are left out. Under callgrind Redis runs about 50 times slower: all of them take
# about 7 minutes here. Set REDIS_COST_OUT=<dir> to keep the dumps for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
all=(ingress batch delivery-slow delivery delivery-limited cluster idle ops)
[ $# -gt 0 ] || set -- "${all[@]}"
phases=()
for name in "$@"; do
  case " ${all[*]} " in
  *" $name "*) phases+=("cost-$name") ;;
  *)
    echo "unknown workload: $name (one of: ${all[*]})" >&2
    exit 2
    ;;
  esac
done
scripts/install-deps.sh --profile
source scripts/cost-phases.sh
run_cost_phases "${REDIS_COST_OUT:-}" "${phases[@]}"
