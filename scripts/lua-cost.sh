#!/usr/bin/env bash
# Counts the instructions Redis executes per call of one Lua script, with its own
# redis-server under callgrind: what one redis.call, argument, table or conversion costs
# inside Redis's Lua, to weigh a script change before making it.
#
#   scripts/lua-cost.sh [-n CALLS] 'lua source' [arg ...]
#   scripts/lua-cost.sh [-n CALLS] -s NAME [arg ...]
#
# With -s, the source is the queue's script NAME (enqueue, claim, complete, stats, dead,
# replay, purge, hold, event) as a process with the default config runs it: a library of
# its settings, its helpers and its function (examples/script_text.rs prints it), loaded
# with FUNCTION LOAD and called with FCALL. Otherwise the source is a plain script, loaded
# with SCRIPT LOAD and called with EVALSHA.
# Runs the script CALLS times (2,000 by default) from 16 clients, KEYS[1] = `{cost}:ready`
# and ARGV = the args (redis-benchmark's __rand_int__ in an arg becomes a number from 0 to
# 199 at each call), and prints the instructions per call, the call itself, its arguments
# and the reply included. For example:
#
#   scripts/lua-cost.sh 'return 1'                                    # about 12,000
#   scripts/lua-cost.sh 'local x = tonumber(ARGV[1]) return 1' 12     # + a conversion
#   scripts/lua-cost.sh "return redis.call('LLEN', KEYS[1])"          # + one command
#   scripts/lua-cost.sh -s claim '{cost}' 16                          # a claim finding nothing
set -euo pipefail
cd "$(dirname "$0")/.."
calls=2000
if [ "${1:-}" = "-n" ]; then
  calls=$2
  shift 2
fi
if [ $# -lt 1 ] || { [ "$1" = "-s" ] && [ $# -lt 2 ]; }; then
  echo "usage: scripts/lua-cost.sh [-n CALLS] {'lua source' | -s NAME} [arg ...]" >&2
  exit 2
fi
library=
if [ "$1" = "-s" ]; then
  source=$(cargo run -q --release --example script_text -- "$2")
  library=$(head -1 <<<"$source" | sed -n 's/^#!lua name=//p')
  shift 2
else
  source=$1
  shift
fi
scripts/install-deps.sh --profile >&2
command -v redis-benchmark >/dev/null || {
  echo "redis-benchmark is missing (Debian's redis-tools)" >&2
  exit 1
}
source scripts/callgrind-redis.sh
if [ -n "$library" ]; then
  loaded=$(redis-cli -p "$port" FUNCTION LOAD "$source")
  call=(FCALL "$library")
else
  loaded=$(redis-cli -p "$port" SCRIPT LOAD "$source")
  call=(EVALSHA "$loaded")
fi
case "$loaded" in
*ERR*)
  echo "$loaded" >&2
  exit 1
  ;;
esac
callgrind_control -i on "$server" >/dev/null 2>&1
callgrind_control -z "$server" >/dev/null 2>&1
redis-benchmark -p "$port" -n "$calls" -c 16 -r 200 -q "${call[@]}" 1 '{cost}:ready' "$@" >/dev/null
callgrind_control -d "$server" >/dev/null 2>&1
total=$(grep -hE "^(summary|totals):" "$dir"/callgrind.out.*.1 | tail -1 | awk "{print \$2}")
echo "$((total / calls)) instructions per call ($total over $calls calls)"
