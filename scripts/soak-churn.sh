#!/usr/bin/env bash
# Churn soak against the wishcast binary: 10,000 viewer join/leave cycles on one stream (half
# by DELETE, half vanishing until consent expires) after a 1,000-cycle warm-up, then 100
# publisher restarts under 4 attached viewers. Prints RSS, file descriptors, threads and
# sessions of the gateway process at the start, after the warm-up and at the end, and fails if
# a session is left, descriptors or threads moved, or RSS ends more than 20 % above the
# warm-up baseline.
#
# It runs the tests of tests/churn.rs (the bounded versions run in `cargo test`) with the full
# counts. Any count can be overridden:
#   WISHCAST_CHURN_CYCLES=10000 WISHCAST_CHURN_WARMUP=1000 WISHCAST_CHURN_CONCURRENCY=8
#   WISHCAST_CHURN_RESTARTS=100 WISHCAST_CHURN_VIEWERS=4
# Set SOAK_PROFILE=release to measure an optimized build (the first build takes a while).
set -euo pipefail
cd "$(dirname "$0")/.."

export WISHCAST_CHURN_CYCLES="${WISHCAST_CHURN_CYCLES:-10000}"
export WISHCAST_CHURN_WARMUP="${WISHCAST_CHURN_WARMUP:-1000}"
export WISHCAST_CHURN_RESTARTS="${WISHCAST_CHURN_RESTARTS:-100}"
profile=()
if [ "${SOAK_PROFILE:-dev}" = release ]; then
    profile=(--release)
fi
cargo test "${profile[@]}" --test churn -- --include-ignored --nocapture --test-threads 1
