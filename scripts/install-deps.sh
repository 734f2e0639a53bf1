#!/usr/bin/env bash
# Installs the system tools the test suite and benchmarks need, when they are missing:
# redis-server (tests start their own on free ports), wrk (benchmarks, `--bench`) and
# valgrind (scripts/redis-cost.sh, `--profile`).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ "${1:-}" = "--bench" ]; then
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
fi
if [ "${1:-}" = "--profile" ]; then
  command -v callgrind_control >/dev/null 2>&1 || need+=(valgrind)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
