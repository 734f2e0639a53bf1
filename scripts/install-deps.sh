#!/usr/bin/env bash
# Installs the system packages the project needs, when they are missing, in one apt run:
#   always         redis-server (tests start their own on free ports)
#   --bench        wrk (benchmarks)
#   --profile      valgrind (scripts/redis-cost.sh)
#   --node         nodejs and npm (scripts/bullmq-cost.sh)
#   --test-tools   chromium (the dashboard's browser test), prometheus (for promtool),
#                  curl and python3-venv (scripts/schemathesis.sh, README blocks), nodejs
#                  and npm (node-zendesk); scripts/install-test-tools.sh asks for these
set -euo pipefail
need=()
missing() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
missing redis-server redis-server
for flag in "$@"; do
  case "$flag" in
  --bench) missing wrk wrk ;;
  --profile) missing callgrind_control valgrind ;;
  --node)
    missing npm npm
    missing node nodejs
    ;;
  --test-tools)
    missing chromium chromium
    missing promtool prometheus
    missing curl curl
    python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    missing npm npm
    missing node nodejs
    ;;
  *)
    echo "unknown flag: $flag (one of --bench, --profile, --node, --test-tools)" >&2
    exit 2
    ;;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
