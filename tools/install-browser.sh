#!/usr/bin/env bash
# Installs Chromium from Debian's packages when it is missing, for the browser tests (the
# HTML bill and the provider console, driven by puppeteer-core). Needs root (CI runs as
# root) or sudo. A browser that cannot be installed fails the tests; they never skip.
set -euo pipefail
if [ -n "${TALLY_CHROMIUM:-}" ] && [ -x "$TALLY_CHROMIUM" ]; then exit 0; fi
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then as_root=(sudo -n); fi
echo "tools: installing chromium from Debian's packages"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
echo "tools: $(chromium --version 2>/dev/null || echo chromium installed)"
