#!/usr/bin/env bash
# Fan-out capacity: a release gateway with one shard pinned to one core, the load tool
# (examples/load.rs) pinned to the others, the viewer count stepped up until sampled viewers
# lose more than MAX_LOSS % of their frames, a join fails, or the gateway's CPU reaches MAX_CPU
# cores. Each step starts a fresh gateway, so its memory figures start from nothing.
#
#   scripts/bench-fanout.sh                       # 100 250 500 750 1000 1500 2000 viewers
#   STEPS="100 300 500" SECS=30 scripts/bench-fanout.sh
#   BASE_URL=http://127.0.0.1:1985 PID=1234 scripts/bench-fanout.sh   # a server started elsewhere
#
# Environment: STEPS, RATE (joins/s, 50), SECS (steady phase, 20), SAMPLES (checking viewers, 8),
# CODEC (h264; vp8 to compare with a server that sends viewers VP8 only), DIRECT_EGRESS (true;
# false sends viewers' media through str0m, media.direct_egress), TRANSPORT_CC (true; false
# writes no transport-wide sequence numbers and reads no such feedback, media.transport_cc),
# SINK (nft as root with nft installed, else bpf; see the load tool's --sink), SHARDS (1),
# GATEWAY_CPUS (0), LOAD_CPUS (the other cores), MAX_SHARD_LOAD (1.0: admission off),
# RESULTS (a file the reports' JSON lines are appended to), SIMULCAST (1: the publisher sends
# three layers, see the load tool's --simulcast), MAX_LOSS (0.5), MAX_CPU (0.95 per shard), RETRIES (2: a failed step is run again while the
# gateway waited for its core, other work on a shared machine), BASE_URL and PID (measure that
# server instead).
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS="${STEPS:-100 250 500 750 1000 1500 2000}"
RATE="${RATE:-50}"
SECS="${SECS:-20}"
SAMPLES="${SAMPLES:-8}"
CODEC="${CODEC:-h264}"
DIRECT_EGRESS="${DIRECT_EGRESS:-true}"
TRANSPORT_CC="${TRANSPORT_CC:-true}"
SHARDS="${SHARDS:-1}"
MAX_SHARD_LOAD="${MAX_SHARD_LOAD:-1.0}"
MAX_LOSS="${MAX_LOSS:-0.5}"
RETRIES="${RETRIES:-2}"
MAX_CPU="${MAX_CPU:-$(awk -v s="$SHARDS" 'BEGIN { print 0.95 * s }')}"
CPUS="$(nproc)"
GATEWAY_CPUS="${GATEWAY_CPUS:-0}"
if [ -z "${LOAD_CPUS:-}" ]; then
  if [ "$CPUS" -gt 1 ]; then LOAD_CPUS="1-$((CPUS - 1))"; else LOAD_CPUS=0; fi
fi
if [ -z "${SINK:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v nft >/dev/null 2>&1; then SINK=nft; else SINK=bpf; fi
fi

echo "== building (release)"
cargo build --release --bin wishcast --example load
BIN="${BIN:-target/release/wishcast}"
LOAD=target/release/examples/load

tmp="$(mktemp -d)"
gateway_pid=""
stop_gateway() {
  if [ -n "$gateway_pid" ]; then
    kill "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
    gateway_pid=""
  fi
}
trap 'stop_gateway; rm -rf "$tmp"' EXIT

cat >"$tmp/wishcast.toml" <<EOF
[http]
listen = "127.0.0.1:0"

[media]
bind_ip = "127.0.0.1"
udp_base_port = 0
direct_egress = $DIRECT_EGRESS
transport_cc = $TRANSPORT_CC

[limits]
posts_per_minute_per_ip = 0
max_shard_load = $MAX_SHARD_LOAD
shed_shard_load = 1.0
EOF

# Starts the gateway and sets base and pid.
start_gateway() {
  : >"$tmp/gateway.log"
  RUST_LOG=wishcast=warn taskset -c "$GATEWAY_CPUS" "$BIN" --config "$tmp/wishcast.toml" \
    --shards "$SHARDS" >"$tmp/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 100); do
    base="$(sed -n 's|^wishcast: WHEP  \(http://[^/]*\)/whep/.*|\1|p' "$tmp/gateway.log")"
    [ -n "$base" ] && break
    sleep 0.1
  done
  if [ -z "$base" ]; then
    echo "the gateway did not start:" >&2
    cat "$tmp/gateway.log" >&2
    exit 1
  fi
  pid="$gateway_pid"
}

# A number from the report's JSON line; empty when it is null.
field() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" <<<"$2"; }

echo "== $(uname -r), $CPUS cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${BASE_URL:-}" ]; then
  echo "== measuring $BASE_URL (pid ${PID:-none}); load on CPUs $LOAD_CPUS, sink $SINK"
else
  echo "== gateway: $SHARDS shard(s) on CPUs $GATEWAY_CPUS, load on CPUs $LOAD_CPUS, sink $SINK"
fi

rows=()
best=""
for n in $STEPS; do
  for try in $(seq 0 "$RETRIES"); do
    if [ -n "${BASE_URL:-}" ]; then
      base="$BASE_URL"
      pid="${PID:-}"
    else
      start_gateway
    fi
    args=("$base" --stream "bench-$n-$try" --viewers "$n" --rate "$RATE" --seconds "$SECS"
      --samples "$SAMPLES" --sink "$SINK" --codec "$CODEC")
    [ -n "$pid" ] && args+=(--pid "$pid")
    [ "${SIMULCAST:-0}" = 1 ] && args+=(--simulcast)
    echo "== $n viewers (load average $(cut -d' ' -f1 /proc/loadavg))"
    if ! out="$(taskset -c "$LOAD_CPUS" "$LOAD" "${args[@]}")"; then
      echo "the load tool failed at $n viewers" >&2
      exit 1
    fi
    [ -z "${BASE_URL:-}" ] && stop_gateway
    echo "$out" | head -n 3
    json="$(tail -n 1 <<<"$out")"
    connected="$(field connected "$json")"
    lost="$(field lost_pct "$json")"
    cpu="$(field cpu_cores "$json")"
    wait="$(field cpu_wait_cores "$json")"
    verdict="$(awk -v n="$n" -v c="$connected" -v l="${lost:-100}" -v cpu="${cpu:-0}" \
      -v ml="$MAX_LOSS" -v mc="$MAX_CPU" 'BEGIN {
        if (c < n) print "joins failed"; else if (l > ml) print "loss"; else if (cpu >= mc) print "cpu"; else print "ok" }')"
    # Other work on the server's core (a shared machine) fails a step that would pass.
    if [ "$verdict" = ok ] || awk -v w="${wait:-0}" 'BEGIN { exit !(w < 0.05) }'; then
      break
    fi
    echo "== the server waited ${wait} cores for a CPU: other work took its core; again"
  done
  [ -n "${RESULTS:-}" ] && echo "$json" >>"$RESULTS"
  header="$(sed -n 1p <<<"$out")"
  rows+=("$(sed -n 2p <<<"$out")")
  if [ "$verdict" = ok ]; then
    best="$n ${cpu:-}"
  else
    echo "== stop at $n viewers: $verdict (lost ${lost:-?} %, CPU ${cpu:-?} cores, waited ${wait:-?})"
    break
  fi
done

echo
echo "== results (load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
[ -n "${header:-}" ] && printf '%s\n' "$header" "${rows[@]}"
if [ -n "$best" ]; then
  read -r n cpu <<<"$best"
  awk -v n="$n" -v cpu="$cpu" 'BEGIN {
    printf "largest passing step: %d viewers", n
    if (cpu > 0) printf " at %.2f cores: %.0f viewers per core", cpu, n / cpu
    printf "\n" }'
else
  echo "no step passed"
fi
