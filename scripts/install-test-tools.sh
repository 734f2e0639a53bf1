#!/usr/bin/env bash
# Installs the tools the test suite drives, under target/test-tools. Idempotent: what is
# already there at the pinned versions is left alone.
#   schemathesis, openapi-spec-validator -> target/test-tools/venv ($ZENRELAY_TOOLS_DIR/venv)
#   node-zendesk (a real Zendesk client) -> target/test-tools/node ($ZENRELAY_TEST_TOOLS/node)
#   chromium (the dashboard's browser test) and promtool (checks deploy/prometheus rules),
#   from Debian packages
set -euo pipefail
cd "$(dirname "$0")/.."

# Python tools for the OpenAPI fuzzing run (scripts/schemathesis.sh).
TOOLS_DIR="${ZENRELAY_TOOLS_DIR:-target/test-tools}"
VENV="$TOOLS_DIR/venv"
if [ ! -x "$VENV/bin/schemathesis" ] || [ ! -x "$VENV/bin/openapi-spec-validator" ]; then
  mkdir -p "$TOOLS_DIR"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    'schemathesis>=4,<5' 'openapi-spec-validator>=0.7,<0.8'
  "$VENV/bin/schemathesis" --version
fi

# System packages: chromium drives the dashboard in tests/it/dashboard.rs; promtool (in
# Debian's prometheus package) checks the alert rules in scripts/test.sh.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# node-zendesk, driven through the proxy by tests/it/proxy.rs.
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
