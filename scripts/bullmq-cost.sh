#!/usr/bin/env bash
# Counts the Redis instructions BullMQ spends on the work zenrelay's Redis-cost figures
# are stated on, with its own redis-server under callgrind, as scripts/redis-cost.sh does
# for zenrelay: one job added (16 clients, 2,000 jobs), one job processed by a
# rate-limited worker whose processor answers in 5-20 ms (200 accounts x 10 jobs,
# concurrency 64), and Redis per second alone and with one idle worker (10 s each).
#
#   scripts/bullmq-cost.sh
#
# Installs BullMQ (the version below) from the npm registry into target/bullmq-cost; takes
# about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
version=5.81.5
scripts/install-deps.sh --profile --node >&2
prefix=target/bullmq-cost
if [ ! -d "$prefix/node_modules/bullmq" ] ||
  [ "$(node -p "require('./$prefix/node_modules/bullmq/package.json').version")" != "$version" ]; then
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --silent "bullmq@$version" >&2
fi
source scripts/callgrind-redis.sh
echo "BullMQ $version, $(redis-server --version | cut -d' ' -f1-3)"
NODE_PATH="$prefix/node_modules" node benches/bullmq/cost.js "$port" "$server" "$dir" |
  sed -n 's/^cost  *//p'
