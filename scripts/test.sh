#!/usr/bin/env bash
# The whole test suite: unit tests, corpus, intake, fault injection, kill -9 and metrics tests
# on SQLite and on a real MariaDB (started here when none is reachable); promtool checks the
# real /metrics output (installed here when absent).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/mariadb.sh
source scripts/mariadb.sh
ensure_mariadb
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool: installing Debian's prometheus package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
export CDRMUNCH_CORPUS_DIR="${CDRMUNCH_CORPUS_DIR:-$(cd .. && pwd)/shared/corpus}"
cargo test --locked "$@"
