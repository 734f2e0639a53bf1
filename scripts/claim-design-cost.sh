#!/usr/bin/env bash
# Weighs the ids-only claim and completion (README, "Why the Redis goals stay out of reach
# of this layout") against this layout's: Redis's instructions for one account's lease
# group of N calls (events of one call in their first form, with a time to live, all
# delivered), each script's call counted by scripts/lua-cost.sh less its set-up's, and a
# plain `HGET` of an event's first form sent in pipelines of 32 (the ids-only design's
# read of each event, made by the gateway), with its own redis-server under callgrind.
#
#   scripts/claim-design-cost.sh [-n CALLS] [N ...]     (groups of 1, 3 and 8 by default)
#
# The ids-only scripts (scripts/claim-design/*.lua) are models of their common path, not
# the gateway's scripts: the reaping, held accounts, retention sweep and next wait that a
# claim does beside its accounts, and a completion's rarer outcomes, are left out of them.
# Compare them by the cost of each call more in a group (the slope between two sizes),
# which those parts do not change.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=1000
if [ "${1:-}" = "-n" ]; then
  calls=$2
  shift 2
fi
[ $# -gt 0 ] || set -- 1 3 8
d=scripts/claim-design
claim=$(cargo run -q --release --example script_text -- claim --plain)
complete=$(cargo run -q --release --example script_text -- complete --plain)
T=1764000000000

# The text of a measure: the set-up `setup` for groups of `n` (`group_lease`: true or
# false), the measured script `body` (none: the set-up alone) as a function, the clean-up.
wrap() {
  local n=$1 setup=$2 body=$3 group_lease=$4
  printf 'local N = %d\nlocal GROUP_LEASE = %s\n' "$n" "$group_lease"
  cat "$d/$setup"
  echo 'local function measured()'
  if [ -n "$body" ]; then printf '%s\n' "$body"; else echo 'return 1'; fi
  echo 'end'
  echo 'local reply = measured()'
  cat "$d/cleanup.lua"
  echo 'return reply'
}
# A model's text, with the helpers it takes from the queue's ahead of it.
model() {
  cat "$d/prelude.lua" "$d/$1"
}
# Instructions per call of the measure's text with the arguments that follow.
count() {
  scripts/lua-cost.sh -n "$calls" "$@" | awk '{print $1}'
}

for n in "$@"; do
  eids=()
  for i in $(seq 1 "$n"); do
    eids+=("$(printf '0190a1b2c3d4e5f6a7b8c9d0e1f2%04x0001' "$i")")
  done
  # a completion of this layout: the account, then per success its id, lease token,
  # upstream status, what its claim saw and its event's key
  now_args=('zr:{p1}' d17)
  # the ids-only design's: the account, claim time and calls, then per call its event's
  # key and summary
  group_args=('zr:{p1}' d17 "$T" "$n")
  for i in $(seq 1 "$n"); do
    eid=${eids[$((i - 1))]}
    now_args+=("$eid:0" $((1764000030000 - i + 1)) 200 "$T-" "zr:{p1}:ev:$eid")
    group_args+=("zr:{p1}:ev:$eid" "delivered 1 200 1764000001234  d17")
  done
  claim_setup=$(count "$(wrap "$n" setup-claim.lua '' false)" 'zr:{p1}' 16)
  now_claim=$(($(count "$(wrap "$n" setup-claim.lua "$claim" false)" 'zr:{p1}' 16) - claim_setup))
  ids_claim=$(($(count "$(wrap "$n" setup-claim.lua "$(model claim-by-ids.lua)" false)" \
    'zr:{p1}' 16) - claim_setup))
  now_setup=$(count "$(wrap "$n" setup-complete.lua '' false)" "${now_args[@]}")
  now_complete=$(($(count "$(wrap "$n" setup-complete.lua "$complete" false)" \
    "${now_args[@]}") - now_setup))
  group_setup=$(count "$(wrap "$n" setup-complete.lua '' true)" "${group_args[@]}")
  group_complete=$(($(count "$(wrap "$n" setup-complete.lua "$(model complete-groups.lua)" \
    true)" "${group_args[@]}") - group_setup))
  echo "group of $n: this layout's claim $now_claim, completion $now_complete:" \
    "$(((now_claim + now_complete) / n)) a call;" \
    "ids-only claim $ids_claim, completion $group_complete:" \
    "$(((ids_claim + group_complete) / n)) a call, and the gateway's read of its event"
done

# The plain read of an event's first form, as the gateway would pipeline it.
source scripts/callgrind-redis.sh
q='4102444800000 \n{"app_id":1,"event":"cost","body":"hello"}'
redis-cli -p "$port" EVAL "for i = 0, 199 do redis.call('HSET', string.format('ev:%012d', i), \
'q', ARGV[1], 'acct', 'd17') end" 0 "$(printf "$q")" >/dev/null
callgrind_control -i on "$server" >/dev/null 2>&1
callgrind_control -z "$server" >/dev/null 2>&1
reads=$((calls * 16))
redis-benchmark -p "$port" -n "$reads" -c 16 -P 32 -r 200 -q HGET 'ev:__rand_int__' q >/dev/null
callgrind_control -d "$server" >/dev/null 2>&1
total=$(grep -hE "^(summary|totals):" "$dir"/callgrind.out.*.1 | tail -1 | awk '{print $2}')
echo "a plain HGET of an event's first form, in pipelines of 32: $((total / reads))"
