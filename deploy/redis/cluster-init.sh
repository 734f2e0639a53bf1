#!/bin/sh
# Joins the six nodes of the docker-compose `cluster` profile into one Redis Cluster (three
# masters, one replica each), unless they already are one; waits until it is ok.
set -eu
nodes="redis-c1 redis-c2 redis-c3 redis-c4 redis-c5 redis-c6"
if redis-cli -h redis-c1 cluster info | grep -q '^cluster_state:ok'; then
  echo "the cluster is already formed"
  exit 0
fi
addrs=""
for node in $nodes; do
  addrs="$addrs $(getent hosts "$node" | awk '{print $1}'):6379"
done
# shellcheck disable=SC2086 # one address per word
redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes
for _ in $(seq 1 60); do
  if redis-cli -h redis-c1 cluster info | grep -q '^cluster_state:ok'; then
    echo "the cluster is ok"
    exit 0
  fi
  sleep 1
done
echo "the cluster did not become ok" >&2
exit 1
