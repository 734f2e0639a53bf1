#!/usr/bin/env bash
# Refreshes docs/dashboard.png: starts `zenrelay demo --traffic` on the in-memory queue (never
# touching a real Redis) with free ports and one history point per second, lets the sample
# load run, pauses `globex` so that it builds a backlog next to its dead letters, then
# photographs the dashboard at 1440x900 with headless Chromium.
#   scripts/screenshot.sh [seconds of traffic, default 75] [output, default docs/dashboard.png]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-75}"
out="${2:-docs/dashboard.png}"
command -v chromium >/dev/null 2>&1 || scripts/install-test-tools.sh
cargo build --quiet --bin zenrelay

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
sim_port="$(free_port)"
base="http://127.0.0.1:$port"
key="zenrelay-demo-key"
profile="$(mktemp -d)"
log="$(mktemp)"

ZENRELAY__REDIS__URL=memory:// ZENRELAY__METRICS__HISTORY_INTERVAL_SECONDS=1 \
  target/debug/zenrelay demo --traffic --listen "127.0.0.1:$port" --sim-listen "127.0.0.1:$sim_port" \
  >"$log" 2>&1 &
demo=$!
cleanup() {
  kill "$demo" 2>/dev/null || true
  wait "$demo" 2>/dev/null || true
  rm -rf "$profile" "$log"
}
trap cleanup EXIT

for _ in $(seq 100); do
  curl -sf "$base/healthz" >/dev/null && break
  sleep 0.2
done
curl -sf "$base/healthz" >/dev/null || { cat "$log"; exit 1; }

sleep $((seconds / 2))
curl -sf -X POST -H "Authorization: Bearer $key" "$base/v1/accounts/globex/pause" >/dev/null
sleep $((seconds - seconds / 2))

mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1440,900 \
  --virtual-time-budget=4000 --screenshot="$out" "$base/#key=$key" 2>/dev/null
echo "wrote $out"
