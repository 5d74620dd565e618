#!/usr/bin/env bash
# The README's test command: every test of the project, the Rust workspace and then the
# TypeScript client (which pays a real gateway built from this workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
bash sdk/typescript/test.sh
