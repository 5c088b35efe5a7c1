#!/usr/bin/env bash
# The loss matrix: the whole gateway on loopback with real kernel loss (an iptables
# `statistic` rule) on the publisher's leg or the viewers' leg, optionally with 0-N ms of
# random delay from the test kit's relay, 20 viewers of a 2.5 Mbit/s H264 stream with a
# 2 s keyframe interval. Each cell runs RUNS times and prints one row per run.
#
# Needs root and iptables (apt-get install iptables). Settings, from the environment:
#   RUNS (3), SECS per run (20), VIEWERS (20), LOSSES ("5 20"), LEGS ("publisher viewers"),
#   JITTER_MS (0; 50 adds the relay's 0-50 ms delay).
#
# Columns: frames lost (% of frames between each viewer's first and last), time to the first
# keyframe p50/p99 (from the WHEP POST; includes ICE and DTLS under the loss), the longest time
# from a missing frame to the keyframe after it, gaps never closed, sessions at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SECS=${SECS:-20}
VIEWERS=${VIEWERS:-20}
LOSSES=${LOSSES:-"5 20"}
LEGS=${LEGS:-"publisher viewers"}
JITTER_MS=${JITTER_MS:-0}

if [ "$(id -u)" != 0 ] || ! command -v iptables >/dev/null; then
    echo "loss-matrix: needs root and iptables" >&2
    exit 1
fi

cargo test --test loss --no-run >/dev/null 2>&1 || cargo test --test loss --no-run

printf '%-10s %5s %7s %4s %10s %9s %9s %14s %9s %9s\n' \
    leg loss jitter run "lost %" "ttff p50" "ttff p99" "gap->key max" unclosed sessions
for leg in $LEGS; do
    for loss in $LOSSES; do
        for run in $(seq 1 "$RUNS"); do
            line=$(LOSS_LEG=$leg LOSS_PCT=$loss LOSS_JITTER_MS=$JITTER_MS LOSS_VIEWERS=$VIEWERS \
                LOSS_SECS=$SECS cargo test -q --test loss matrix_cell -- --ignored --nocapture \
                2>/dev/null | grep '^MATRIX' || echo "MATRIX $leg $loss $JITTER_MS failed - - - - -")
            # MATRIX leg loss jitter lost ttff50 ttff99 gapmax unclosed sessions
            read -r _ _ _ _ lost t50 t99 gap unclosed sessions <<<"$line"
            printf '%-10s %4s%% %5sms %4s %10s %7sms %7sms %12sms %9s %9s\n' \
                "$leg" "$loss" "$JITTER_MS" "$run" "$lost" "$t50" "$t99" "$gap" "$unclosed" "$sessions"
        done
    done
done
