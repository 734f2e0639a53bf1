#!/usr/bin/env bash
# Installs the third-party Zendesk clients the integration tests drive through the proxy,
# into target/test-tools (or $ZENRELAY_TEST_TOOLS). Idempotent: does nothing when the pinned
# versions are already there.
#   node-zendesk  ->  target/test-tools/node/node_modules/node-zendesk
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${ZENRELAY_TEST_TOOLS:-$PWD/target/test-tools}"
node_zendesk_version="6.0.1"

if ! command -v npm >/dev/null 2>&1; then
  echo "installing: nodejs npm"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm
fi

node_dir="$tools/node"
installed="$node_dir/node_modules/node-zendesk/package.json"
if [ -f "$installed" ] && grep -q "\"version\": \"$node_zendesk_version\"" "$installed"; then
  echo "node-zendesk $node_zendesk_version already in $node_dir"
else
  mkdir -p "$node_dir"
  [ -f "$node_dir/package.json" ] || echo '{"name":"zenrelay-test-tools","private":true}' >"$node_dir/package.json"
  npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error \
    "node-zendesk@$node_zendesk_version"
  echo "node-zendesk $node_zendesk_version installed in $node_dir"
fi
