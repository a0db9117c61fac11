#!/usr/bin/env bash
# End-to-end bench on SQLite and MariaDB (started here when none is reachable).
# Figures are printed, never asserted. Options: see benches/e2e.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mariadb.sh
ensure_mariadb
cargo build --release --locked
exec python3 benches/e2e.py "$@"
