#!/usr/bin/env bash
# Builds the gateway of the release before the Redis layout carried a version (layout 1),
# from this repository's history, for the upgrade tests (tests/it/upgrade.rs); prints the
# path of its binary. The build is cached under target/previous-release: a second run
# only prints the path.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=549f31430ffa8b90c0aaef12d4378d18f9ecffa7
out="$PWD/target/previous-release"
bin="$out/target/debug/zenrelay"
if [ ! -x "$bin" ]; then
  if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "commit $commit is not in this clone's history (shallow clone? run: git fetch --unshallow)" >&2
    exit 1
  fi
  rm -rf "$out/src"
  mkdir -p "$out/src"
  git archive "$commit" | tar -x -C "$out/src"
  echo "building the previous release ($commit) for the upgrade tests..." >&2
  CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0 \
    cargo build --quiet --locked --bin zenrelay \
    --manifest-path "$out/src/Cargo.toml" --target-dir "$out/target" >&2
fi
echo "$bin"
