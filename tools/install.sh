#!/usr/bin/env bash
# Installs the project-local, lockfile-pinned tools into tools/node_modules:
#   solc (solcjs)                   tools/node_modules/solc/            (used by crates/tally-chain/contracts/compile.js)
#   @foundry-rs/anvil-linux-amd64   tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
#   @x402/core                      tools/node_modules/@x402/core/  (used by tools/x402-check.mjs)
#   puppeteer-core                  drives Debian's chromium in the browser tests (tools/browser/)
#   esbuild, @noble/hashes, @noble/curves
#                                   bundle the bill page's verifier (BLAKE3, SHA-256, ed25519)
# Idempotent: does nothing when all are already installed at the locked versions.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

locked() { # locked NAME -> version recorded in package-lock.json
  node -e 'const l=require("./package-lock.json");process.stdout.write(l.packages["node_modules/"+process.argv[1]].version)' "$1"
}
installed() { # installed NAME -> version in node_modules, or empty
  node -e 'try{process.stdout.write(require("./node_modules/"+process.argv[1]+"/package.json").version)}catch(e){}' "$1"
}

up_to_date=1
for pkg in solc @foundry-rs/anvil-linux-amd64 @x402/core zod puppeteer-core esbuild @noble/hashes @noble/curves; do
  if [ "$(installed "$pkg")" != "$(locked "$pkg")" ]; then up_to_date=0; fi
done
anvil="$here/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
if [ "$up_to_date" = 1 ] && [ -x "$anvil" ]; then
  echo "tools: solc $(locked solc), anvil $(locked @foundry-rs/anvil-linux-amd64) and @x402/core $(locked @x402/core) already installed"
  exit 0
fi

npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
if [ ! -x "$anvil" ]; then
  echo "tools: anvil binary missing at $anvil after npm ci" >&2
  exit 1
fi
echo "tools: installed solc $(installed solc), @x402/core $(installed @x402/core) and $("$anvil" --version | head -n 1)"
