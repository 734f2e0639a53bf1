#!/usr/bin/env bash
# Counts the instructions Redis executes per stored event and per delivery, by running the
# relay benchmark's delivery phase with its redis-server under callgrind. Instruction
# counts do not move with the machine's load, so two builds can be compared exactly where
# timings are too noisy: run it on each and compare the two figures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --profile
cargo bench --bench relay --no-run
# The benchmark's executable, from cargo's description of the artifact it built.
exe=$(cargo bench --bench relay --no-run --message-format=json 2>/dev/null |
  grep '"name":"relay"' | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4 || true)
[ -n "$exe" ] || { echo "cannot find the relay benchmark's executable" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The benchmark starts `redis-server` from PATH: this one runs the real one under callgrind.
mkdir -p "$work/bin"
cat > "$work/bin/redis-server" <<EOF
#!/usr/bin/env bash
exec valgrind --tool=callgrind --callgrind-out-file=$work/callgrind.out $(command -v redis-server) "\$@" 2>$work/valgrind.log
EOF
chmod +x "$work/bin/redis-server"
PATH="$work/bin:$PATH" "$exe" --bench delivery >"$work/bench.out" 2>&1 &
bench=$!
# The phase runs two gateways in turn: the first stores the backlog, the second delivers
# it. Each one's exit is followed by a dump of the counts since the previous dump (the
# first can take in the first moments of delivery: a dump takes a fraction of a second).
seen=()
dumped=0
redis=""
while kill -0 "$bench" 2>/dev/null && [ "$dumped" -lt 2 ]; do
  [ -n "$redis" ] || redis=$(pgrep -P "$bench" -f callgrind | head -1 || true)
  for pid in $(pgrep -P "$bench" -f "zenrelay serve" || true); do
    case " ${seen[*]} " in *" $pid "*) ;; *) seen+=("$pid") ;; esac
  done
  if [ -n "$redis" ] && [ "${#seen[@]}" -gt "$dumped" ] && ! kill -0 "${seen[$dumped]}" 2>/dev/null; then
    callgrind_control -d "$redis" >/dev/null 2>&1
    dumped=$((dumped + 1))
  fi
  sleep 0.02
done
wait "$bench" || { cat "$work/bench.out"; exit 1; }
total=$(grep -o 'delivery [0-9]* accounts x [0-9]*' "$work/bench.out" | awk '{print $2 * $5}')
count() { callgrind_annotate "$1" 2>/dev/null | grep 'PROGRAM TOTALS' | awk '{gsub(",", "", $1); print $1}'; }
parts=("$work"/callgrind.out.*)
[ "${#parts[@]}" -ge 2 ] || { echo "callgrind dumps missing" >&2; exit 1; }
stored=$(count "${parts[0]}")
delivered=$(count "${parts[1]}")
echo "Redis instructions per stored event: $((stored / total)) (storing $total events, with Redis start-up)"
echo "Redis instructions per delivery:     $((delivered / total)) ($total deliveries)"
