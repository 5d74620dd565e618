#!/usr/bin/env bash
# Bundles the bill page's script (crates/tally-bill/web/*.js and the pinned @noble libraries
# from tools/node_modules) into crates/tally-bill/assets/bill.js, which tally-bill includes
# in every bill. `--check` fails if the committed bundle is not what the sources build to.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/install.sh" >/dev/null
out="$root/crates/tally-bill/assets/bill.js"
target="$out"
if [ "${1:-}" = "--check" ]; then target="$(mktemp)"; fi
NODE_PATH="$root/tools/node_modules" "$root/tools/node_modules/.bin/esbuild" \
  "$root/crates/tally-bill/web/bill.js" --bundle --format=iife --minify --target=chrome100 \
  --legal-comments=inline --charset=utf8 --log-level=warning --outfile="$target"
if [ "${1:-}" = "--check" ]; then
  if ! cmp -s "$target" "$out"; then
    echo "crates/tally-bill/assets/bill.js is stale: run bash tools/build-bill-page.sh" >&2
    rm -f "$target"; exit 1
  fi
  rm -f "$target"; echo "bill page bundle is fresh"
fi
