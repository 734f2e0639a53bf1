#!/usr/bin/env bash
# Refreshes docs/dashboard.png: runs the simulator and a gateway on the in-memory queue (never
# touching a real Redis) on free ports, with a dozen accounts and one history point per
# second, sends traffic that puts accounts in every state an operator meets (a backlog held
# by its rolling window, dead letters, an operator pause, an upstream 429 pause, refused
# credentials), then photographs the dashboard at 1440x900 with headless Chromium.
#   scripts/screenshot.sh [seconds of traffic, default 90] [output, default docs/dashboard.png]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-90}"
out="${2:-docs/dashboard.png}"
command -v chromium >/dev/null 2>&1 || scripts/install-test-tools.sh
cargo build --quiet --bin zenrelay
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/zenrelay"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
sim_port="$(free_port)"
base="http://127.0.0.1:$port"
sim="http://127.0.0.1:$sim_port"
key="screenshot-admin-key-0123456789"
accounts=(acme globex initech umbrella hooli stark wayne wonka cyberdyne tyrell soylent oscorp)

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

{
  printf '[log]\nlevel = "warn"\n[sim]\nlisten = "127.0.0.1:%s"\nnotify_per_minute = 10000\n' "$sim_port"
  for a in "${accounts[@]}"; do
    printf '[[sim.accounts]]\nsubdomain = "%s"\n[[sim.accounts.users]]\nemail = "admin@%s.example"\nrole = "admin"\napi_token = "tok-%s"\n' "$a" "$a" "$a"
  done
} >"$work/sim.toml"
{
  printf '[server]\nlisten = "127.0.0.1:%s"\n[redis]\nurl = "memory://"\n' "$port"
  printf '[delivery]\nnotify_per_minute = 30\nnotify_window_seconds = 10\nmax_attempts = 3\nretry_base_ms = 2000\nretry_max_ms = 8000\n'
  printf '[metrics]\nhistory_interval_seconds = 1\n[log]\nlevel = "warn"\n'
  printf '[[clients]]\nname = "ops"\nkey = "%s"\naccounts = ["*"]\nadmin = true\n' "$key"
  for a in "${accounts[@]}"; do
    printf '[[accounts]]\nid = "%s"\nsubdomain = "%s"\nbase_url = "%s"\nemail = "admin@%s.example"\napi_token = "tok-%s"\n' "$a" "$a" "$sim" "$a" "$a"
  done
} >"$work/gateway.toml"

"$bin" sim --config "$work/sim.toml" >"$work/sim.log" 2>&1 &
pids+=($!)
"$bin" serve --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "$base/healthz" >/dev/null && curl -sf "$sim/__sim/notifications?account=acme" >/dev/null && break
  sleep 0.2
done
curl -sf "$base/healthz" >/dev/null || { cat "$work/gateway.log" "$work/sim.log"; exit 1; }

admin() { curl -sf -X "$1" -H "Authorization: Bearer $key" "$base$2" >/dev/null; }
fault() { curl -sf -X POST -H 'Content-Type: application/json' -d "$1" "$sim/__sim/faults" >/dev/null; }
# Sends $2 events to account $1 in one batch call.
send() {
  local events="" i
  for ((i = 0; i < $2; i++)); do
    events+="${events:+,}{\"app_id\": 375, \"event\": \"ticketUpdated\", \"body\": {\"ticket\": $i}}"
  done
  curl -s -o /dev/null -X POST -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "{\"events\": [$events]}" "$base/v1/accounts/$1/notify/batch" || true
}

# Who fails how: refused credentials, a long upstream 429 pause, rejected calls (dead letters).
fault '{"account": "hooli", "route": "notify", "status": 401}'
fault '{"account": "globex", "route": "notify", "status": 400, "fail_next": 4}'
fault '{"account": "wonka", "route": "notify", "status": 503, "error_rate": 0.3}'
admin POST /v1/accounts/initech/pause

# Events per second per account: acme and umbrella send more than their 30 per 10 s.
declare -A rate=([acme]=5 [umbrella]=4 [globex]=1 [initech]=1 [hooli]=1 [stark]=2 [wayne]=2 [wonka]=2
  [cyberdyne]=1 [tyrell]=1 [soylent]=0 [oscorp]=0)
end=$((SECONDS + seconds))
stark_at=$((SECONDS + seconds * 2 / 3))
while [ "$SECONDS" -lt "$end" ]; do
  if [ -n "${stark_at:-}" ] && [ "$SECONDS" -ge "$stark_at" ]; then
    fault '{"account": "stark", "route": "notify", "status": 429, "retry_after": 600, "fail_next": 1}'
    stark_at=""
  fi
  senders=()
  for a in "${accounts[@]}"; do
    if [ "${rate[$a]}" -gt 0 ]; then
      send "$a" "${rate[$a]}" &
      senders+=($!)
    fi
  done
  wait "${senders[@]}"
  sleep 0.8
done

mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --hide-scrollbars --window-size=1440,900 \
  --virtual-time-budget=4000 --screenshot="$out" "$base/#key=$key&account=globex" 2>/dev/null
echo "wrote $out"
