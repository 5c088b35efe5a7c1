#!/usr/bin/env bash
# Overload at full scale: a release gateway with one shard pinned to CPU 0, one 2.4 Mbit/s
# H264 + Opus stream, admission control first, then VIEWERS viewers past saturation with
# shedding on, watched for SECS seconds. Prints the RSS per second, viewers shed, the shard's
# load and DELETE latency (tests/overload.rs). Needs root (an nftables rule drops RTP to the
# cheap viewers on 127.0.0.2) and two cores.
#
#   scripts/soak-overload.sh [VIEWERS] [SECS]      # defaults: 1100 viewers, 60 s
set -euo pipefail
cd "$(dirname "$0")/.."
VIEWERS="${1:-1100}"
SECS="${2:-60}"
cargo build --release --locked --bin wishcast
WISHCAST_BIN="$PWD/target/release/wishcast" OVERLOAD_VIEWERS="$VIEWERS" OVERLOAD_SECS="$SECS" \
  WISHCAST_NETADMIN=require cargo test --locked --test overload -- --nocapture
