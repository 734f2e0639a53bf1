#!/usr/bin/env bash
# Installs the Python test tools (schemathesis, openapi-spec-validator) into a virtualenv
# under target/test-tools/venv (or $ZENRELAY_TOOLS_DIR/venv). Idempotent: a second run
# with the tools already present does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_DIR="${ZENRELAY_TOOLS_DIR:-target/test-tools}"
VENV="$TOOLS_DIR/venv"
if [ -x "$VENV/bin/schemathesis" ] && [ -x "$VENV/bin/openapi-spec-validator" ]; then
  exit 0
fi
mkdir -p "$TOOLS_DIR"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  'schemathesis>=4,<5' 'openapi-spec-validator>=0.7,<0.8'
"$VENV/bin/schemathesis" --version
