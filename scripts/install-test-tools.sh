#!/usr/bin/env bash
# Installs the tools the test suite drives, under target/test-tools. Idempotent: what is
# already there at the pinned versions is left alone.
#   schemathesis, openapi-spec-validator -> target/test-tools/venv ($ZENRELAY_TOOLS_DIR/venv)
#   node-zendesk (a real Zendesk client) -> target/test-tools/node ($ZENRELAY_TEST_TOOLS/node)
#   chromium (the dashboard's browser test), promtool (checks deploy/prometheus rules),
#   curl, python3-venv, nodejs and npm: Debian packages, through scripts/install-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages (chromium, promtool, curl, python3-venv, nodejs, npm), in one apt run.
scripts/install-deps.sh --test-tools

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

# node-zendesk, driven through the proxy by tests/it/proxy.rs.
tools="${ZENRELAY_TEST_TOOLS:-$PWD/target/test-tools}"
node_zendesk_version="6.0.1"
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
