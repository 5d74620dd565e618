#!/usr/bin/env bash
# CI entry of the TypeScript client (sdk/typescript): installs exactly the lockfile, compiles,
# runs the vector, unit and mock-gateway tests, then the e2e test against a real gateway.
# The e2e test uses $TALLY_BIN if set, else builds the `tally` binary (release) into
# $CARGO_TARGET_DIR (default: the workspace's target/), and anvil from tools/install.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
npm test
if [ -z "${TALLY_BIN:-}" ]; then
  (cd "$root" && cargo build --release -p tally-cli --bin tally)
  export TALLY_BIN="${CARGO_TARGET_DIR:-$root/target}/release/tally"
fi
bash "$root/tools/install.sh"
npm run test:e2e
