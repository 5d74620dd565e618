#!/usr/bin/env bash
# The README's test command: every test of the project, the Rust workspace and then the
# TypeScript client (which pays a real gateway built from this workspace). The browser tests
# need Chromium: tools/install-browser.sh installs Debian's when it is missing. The cluster
# store's tests need PostgreSQL 15: tools/install-postgres.sh installs Debian's when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-browser.sh
bash tools/install-postgres.sh
cargo test --workspace --release
bash sdk/typescript/test.sh
