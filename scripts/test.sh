#!/usr/bin/env bash
# The whole test suite: unit tests, corpus, intake, fault injection and kill -9 tests on
# SQLite and on a real MariaDB (started here when none is reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/mariadb.sh
source scripts/mariadb.sh
ensure_mariadb
export CDRMUNCH_CORPUS_DIR="${CDRMUNCH_CORPUS_DIR:-$(cd .. && pwd)/shared/corpus}"
cargo test --locked "$@"
