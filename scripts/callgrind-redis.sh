# Sourced by scripts/lua-cost.sh and scripts/bullmq-cost.sh: starts a redis-server of
# their own on a free port under callgrind, with instrumentation off until they turn it
# on, and stops it (and removes its files) when the sourcing script exits. Sets `dir`
# (the dumps: callgrind.out.<pid>, callgrind.out.<pid>.<n> per `callgrind_control -d`),
# `port` and `server` (its pid).
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out.%p" \
  --log-file="$dir/valgrind.log" \
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 300); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.2
done
redis-cli -p "$port" ping >/dev/null 2>&1 || {
  echo "redis-server under callgrind did not start (see $dir/valgrind.log)" >&2
  exit 1
}
