#!/usr/bin/env bash
# Coverage-guided fuzzing of the gateway's hostile-input paths (see fuzz/README.md).
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]     default: all targets, 60 s each
#
# Builds the targets with cargo-fuzz and libFuzzer on the stable toolchain (no sanitizer:
# those need nightly), then runs each for SECONDS, starting from the committed corpus in
# fuzz/corpus/TARGET. New inputs go to fuzz/corpus-run/TARGET (ignored by git); the committed
# corpus is only read. A crash, panic, failed check or hang stops the run with a non-zero
# exit; libFuzzer prints the input's file under fuzz/artifacts/TARGET, and
# `cargo fuzz run -s none TARGET FILE` replays it.
set -euo pipefail

cd "$(dirname "$0")/.."
which=${1:-all}
seconds=${2:-60}
all=(sdp_offer sdpfrag http datagrams picture twcc vp8)
if [[ $which == all ]]; then
  targets=("${all[@]}")
else
  targets=("$which")
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# -s none: no sanitizer, so stable rustc builds it. 16 codegen units: a much faster build for
# a slightly slower fuzzer.
flags=(-s none --codegen-units 16)
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz: build took $(($(date +%s) - start)) s"

for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus-run/$t" "fuzz/corpus/$t"
  dict=()
  if [[ -f fuzz/dict/$t.dict ]]; then
    dict=("-dict=fuzz/dict/$t.dict")
  fi
  echo "fuzz: $t for $seconds s"
  # -timeout: one input taking 30 s is a hang. -rss_limit_mb: the gateway's memory stays
  # bounded per input, and a leak shows as an out-of-memory report.
  cargo fuzz run "${flags[@]}" "$t" "fuzz/corpus-run/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    "${dict[@]}" 2>&1 | grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)' || {
    echo "fuzz: $t failed" >&2
    exit 1
  }
done
echo "fuzz: all done in $(($(date +%s) - start)) s"
