# Sourced by the test and bench scripts. Makes a MariaDB answer for the tests and exports
# CDRMUNCH_TEST_MYSQL_URL (server URL without database; each test creates its own).
#  1. CDRMUNCH_TEST_MYSQL_URL already set: used as is.
#  2. A server on 127.0.0.1:3306 that lets root in without a password: used.
#  3. Otherwise a private mariadbd on a temporary datadir and a free port, stopped and
#     removed on exit; Debian's mariadb-server is installed first when mariadbd is absent.

mariadb_ok() { # host port user [password]
  mariadb --protocol=TCP -h "$1" -P "$2" -u "$3" ${4:+-p"$4"} -e 'SELECT 1' >/dev/null 2>&1
}

ensure_mariadb() {
  if [ -n "${CDRMUNCH_TEST_MYSQL_URL:-}" ]; then
    echo "mariadb: using CDRMUNCH_TEST_MYSQL_URL"; return 0
  fi
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    echo "mariadb: installing Debian's mariadb-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >/dev/null
  fi
  if command -v mariadb >/dev/null 2>&1 && mariadb_ok 127.0.0.1 3306 root; then
    export CDRMUNCH_TEST_MYSQL_URL="mysql://root@127.0.0.1:3306"
    echo "mariadb: using the server on 127.0.0.1:3306"; return 0
  fi
  local mariadbd; mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  CDRMUNCH_MARIADB_DIR=$(mktemp -d /tmp/cdrmunch-mariadb.XXXXXX)
  local port=$(( 34000 + RANDOM % 2000 ))
  echo "mariadb: starting a private mariadbd on 127.0.0.1:$port (datadir $CDRMUNCH_MARIADB_DIR)"
  mariadb-install-db --no-defaults --user=root --datadir="$CDRMUNCH_MARIADB_DIR/data" \
    --auth-root-authentication-method=normal --skip-test-db >"$CDRMUNCH_MARIADB_DIR/install.log" 2>&1
  "$mariadbd" --no-defaults --user=root --datadir="$CDRMUNCH_MARIADB_DIR/data" \
    --socket="$CDRMUNCH_MARIADB_DIR/sock" --port="$port" --bind-address=127.0.0.1 \
    --pid-file="$CDRMUNCH_MARIADB_DIR/pid" --skip-log-bin --innodb-buffer-pool-size=256M \
    --max-connections=500 >"$CDRMUNCH_MARIADB_DIR/server.log" 2>&1 &
  CDRMUNCH_MARIADB_PID=$!
  trap stop_private_mariadb EXIT
  for _ in $(seq 1 100); do
    if mariadb -S "$CDRMUNCH_MARIADB_DIR/sock" -u root -e 'SELECT 1' >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  mariadb -S "$CDRMUNCH_MARIADB_DIR/sock" -u root -e \
    "CREATE USER IF NOT EXISTS 'cdrmunch'@'127.0.0.1' IDENTIFIED BY 'cdrmunch'; GRANT ALL ON *.* TO 'cdrmunch'@'127.0.0.1';" \
    || { cat "$CDRMUNCH_MARIADB_DIR/server.log"; return 1; }
  export CDRMUNCH_TEST_MYSQL_URL="mysql://cdrmunch:cdrmunch@127.0.0.1:$port"
}

stop_private_mariadb() {
  if [ -n "${CDRMUNCH_MARIADB_PID:-}" ]; then
    kill "$CDRMUNCH_MARIADB_PID" 2>/dev/null || true
    wait "$CDRMUNCH_MARIADB_PID" 2>/dev/null || true
    rm -rf "$CDRMUNCH_MARIADB_DIR"
  fi
}
