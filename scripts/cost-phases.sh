# Sourced by scripts/redis-cost.sh and scripts/gateway-cost.sh. `run_cost_phases DIR PHASE...`
# runs the relay benchmark's cost phases PHASE... under callgrind, keeping the dumps (and
# the benchmark's output, bench.out) in DIR, or in a temporary directory removed at exit
# when DIR is empty, and prints the phases' figures: one `cost` line each, the figure, its
# count and its goal.
run_cost_phases() {
  local out=$1
  shift
  cargo bench --bench relay --no-run
  if [ -n "$out" ]; then
    mkdir -p "$out"
  else
    out=$(mktemp -d)
    # (expanded now: the variable is gone by the time the shell exits)
    # shellcheck disable=SC2064
    trap "rm -rf '$out'" EXIT
  fi
  local log="$out/bench.out"
  # The phases count work done against a redis-server: never the embedded backend.
  unset ZENRELAY_BENCH_REDIS
  if ! ZENRELAY_BENCH_CALLGRIND=$(cd "$out" && pwd) cargo bench --bench relay -- "$@" >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  sed -n 's/^cost  *//p' "$log"
}
