#!/bin/bash
# The scheduler container. First a Ray node without CPUs: each scheduled run is a Ray
# driver, and a driver needs a raylet on its own machine (from any other machine,
# ray.init fails with "No node info found"). Then the daemon. When either one ends,
# so does the container, and Docker's restart policy brings both back together.
set -u
address="${RAY_ADDRESS:?set RAY_ADDRESS to the Ray head, e.g. ray-head:6379}"
# Its object store (the runs' epoch channels live here) fits in the container's 1 GB /dev/shm.
ray start --address="$address" --num-cpus=0 --object-store-memory=500000000 --block --disable-usage-stats &
node=$!
# Up to 3 minutes for the node to join (a head that restarted meanwhile leaves
# `ray start` retrying for ever): then exit, and Docker starts the container again.
for _ in $(seq 180); do
    python /usr/local/lib/tuner-docker/healthcheck.py node "$address" 2>/dev/null && break
    if ! kill -0 "$node" 2>/dev/null; then
        wait "$node"
        exit $?
    fi
    sleep 1
done
if ! python /usr/local/lib/tuner-docker/healthcheck.py node "$address"; then
    kill -TERM "$node"
    exit 1
fi
tuner scheduler "$@" &
daemon=$!
# docker stop: the daemon first (it records its runs interrupted), then the node.
trap 'kill -TERM "$daemon" 2>/dev/null' TERM INT
wait -n "$node" "$daemon"
code=$?
kill -TERM "$daemon" 2>/dev/null
wait "$daemon"
kill -TERM "$node" 2>/dev/null
wait "$node"
exit "$code"
