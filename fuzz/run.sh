#!/usr/bin/env bash
# Runs every fuzz target for a while, starting from the committed seeds.
# Usage: bash fuzz/run.sh [seconds per target, default 30]
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
for target in decode_messages checkpoint_note proof_bundle verify_inclusion verify_consistency http_wire request_path usage_stream relay_request; do
  mkdir -p "corpus/$target"
  cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
  echo "== fuzz $target for ${secs}s"
  log="$(mktemp)"
  if ! cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$secs" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $target failed; the input is under fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E "^Done" "$log"
  rm -f "$log"
done
