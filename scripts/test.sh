#!/usr/bin/env bash
# The whole test suite: unit tests, corpus, intake, fault injection, kill -9, metrics and task
# tests on SQLite and on a real MariaDB (started here when none is reachable); promtool checks
# the real /metrics output (installed here when absent); the task tests run moto_server (S3)
# and aiosmtpd (SMTP) from a Python venv created here when absent.
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
# moto_server and aiosmtpd: real S3 and SMTP servers for the task handlers' tests. The tests
# start and stop their own instances on free loopback ports.
export CDRMUNCH_TEST_VENV="${CDRMUNCH_TEST_VENV:-$HOME/.cache/cdrmunch/test-venv}"
if [ ! -x "$CDRMUNCH_TEST_VENV/bin/moto_server" ] || [ ! -x "$CDRMUNCH_TEST_VENV/bin/aiosmtpd" ]; then
  echo "test venv: installing moto[server] and aiosmtpd into $CDRMUNCH_TEST_VENV"
  if ! python3 -m venv --help >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null
  fi
  rm -rf "$CDRMUNCH_TEST_VENV"
  python3 -m venv "$CDRMUNCH_TEST_VENV"
  "$CDRMUNCH_TEST_VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' 'aiosmtpd>=1.4,<2'
fi
export CDRMUNCH_CORPUS_DIR="${CDRMUNCH_CORPUS_DIR:-$(cd .. && pwd)/shared/corpus}"
cargo test --locked "$@"
