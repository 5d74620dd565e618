#!/usr/bin/env bash
# Installs PostgreSQL 15 from Debian's packages when it is missing, for the cluster store's
# tests (crates/tally-store-pg), which start their own server with initdb and pg_ctl in a
# temporary directory on 127.0.0.1. Needs root (CI runs as root) or sudo. A PostgreSQL that
# cannot be installed fails those tests; they never skip.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
if [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ]; then
  exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then as_root=(sudo -n); fi
echo "tools: installing postgresql-15 from Debian's packages"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
# The package's own cluster is not used by the tests; they start theirs as the postgres user.
test -x "$bin/initdb"
echo "tools: $("$bin/postgres" --version)"
