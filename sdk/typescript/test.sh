#!/usr/bin/env bash
# CI entry of the TypeScript client: install exactly the lockfile, compile, run every test.
# The e2e test (test/e2e.test.ts) needs a built `tally` binary and anvil (bash tools/install.sh);
# set TALLY_BIN to the binary, else it is looked for in $CARGO_TARGET_DIR or target/.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm test
