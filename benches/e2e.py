#!/usr/bin/env python3
"""End-to-end bench: starts `cdrmunch serve` (release build), posts K generated CDRs from C
concurrent clients with `cdrmunch submit --generate`, waits until every CDR is normalized,
and prints CDR/s, POST->normalized latency p50/p99 and the server's peak RSS; then waits until
every task (billing, calllog) is done and prints that time too.

POST->normalized latency is taken per CDR from the POST's start (recorded by submit) to the
mtime of its normalized XML file, which is written just before the commit.

Usage: benches/e2e.sh [--count K] [--concurrency C] [--db sqlite|mysql|both] [--distilleries N] [--threads T] [--data-dir DIR]
"""
import argparse, csv, glob, os, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "cdrmunch")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def scalar(db_url, sql):
    """One number from the CDR database (tables unqualified)."""
    if db_url.startswith("sqlite://"):
        import sqlite3
        con = sqlite3.connect(db_url[len("sqlite://"):], timeout=30)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    args, db = mariadb_cli(db_url)
    return int(subprocess.check_output(args + ["-N", "-B", "-D", db, "-e", sql]).strip())


def count_normalized(db_url, tmp):
    return scalar(db_url, "SELECT COUNT(*) FROM normalized_cdrs")


def mariadb_cli(db_url):
    """The mariadb client arguments for mysql://user[:pass]@host[:port]/db[?params], and db."""
    cred, hostpart = db_url[len("mysql://"):].rsplit("@", 1)
    user, _, pw = cred.partition(":")
    hostport, db = hostpart.split("/", 1)
    host, _, port = hostport.partition(":")
    args = ["mariadb", "--protocol=TCP", "-h", host, "-P", port or "3306", "-u", user] + ([f"-p{pw}"] if pw else [])
    return args, db.split("?")[0]


def drop_mysql(db_url):
    args, db = mariadb_cli(db_url)
    subprocess.call(args + ["-e", f"DROP DATABASE IF EXISTS `{db}`"])


def mysql_questions(db_url):
    """MariaDB's global statement counter (None on SQLite)."""
    if not db_url.startswith("mysql://"):
        return None
    args, _ = mariadb_cli(db_url)
    out = subprocess.check_output(args + ["-N", "-B", "-e", "SHOW GLOBAL STATUS LIKE 'Questions'"]).decode()
    return int(out.split()[1])


def tree_bytes(d):
    total = 0
    for root, _, files in os.walk(d):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def stored_bytes(db_url, tmp):
    """Bytes kept: raw and normalized CDR files, and the CDR database (SQLite file with its
    WAL, or MariaDB's data + index length of the bench database)."""
    if db_url.startswith("sqlite://"):
        path = db_url[len("sqlite://"):]
        db = sum(os.path.getsize(p) for p in glob.glob(path + "*"))
    else:
        args, name = mariadb_cli(db_url)
        sql = (f"SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.TABLES "
               f"WHERE table_schema = '{name}'")
        subprocess.call(args + ["-e", f"ANALYZE TABLE `{name}`.cdr_queue, `{name}`.normalized_cdrs, `{name}`.tasks"],
                        stdout=subprocess.DEVNULL)
        db = int(subprocess.check_output(args + ["-N", "-B", "-e", sql]).strip())
    return {"raw": tree_bytes(os.path.join(tmp, "cdr")), "ncdr": tree_bytes(os.path.join(tmp, "ncdr")), "db": db}


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def run(db, count, concurrency, distilleries, data_dir, threads):
    tmp = tempfile.mkdtemp(prefix="cdrmunch-bench-", dir=data_dir)
    port = free_port()
    if db == "sqlite":
        db_url = f"sqlite://{tmp}/cdrmunch.db"
    else:
        base = os.environ.get("CDRMUNCH_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")
        db_url = f"{base}/cdrmunch_bench_{os.getpid()}" + os.environ.get("CDRMUNCH_BENCH_MYSQL_PARAMS", "")
    conf = os.path.join(tmp, "bench.conf")
    with open(conf, "w") as f:
        f.write(f"""server.address = 127.0.0.1
server.port = {port}
cdrdb.url = {db_url}
cdrdb.max_connections = 20
request_handler.cdr_base_dir = {tmp}/cdr
request_handler.paging_base_dir = {tmp}/paging
request_handler.pcap_base_dir = {tmp}/pcap
cdr_base_dir = {tmp}/cdr
normalized_cdr_base_dir = {tmp}/ncdr
distiller.number_of_distilleries = {distilleries}
billingdb.url = sqlite://{tmp}/billing.db
executor.threads = {threads}
log.level = 3
metrics.port = 0
app.pid_file = {tmp}/cdrmunch.pid
""")
    server = subprocess.Popen([BIN, "serve", "--config", conf], stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "serve.log"), "w"))
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if urllib.request.urlopen(url + "/health", timeout=1).status == 200:
                    break
            except Exception:
                time.sleep(0.05)
        timings = os.path.join(tmp, "timings.csv")
        questions0 = mysql_questions(db_url)
        t0 = time.time()
        subprocess.check_call([BIN, "submit", "--url", url + "/api/v2/cdr", "--generate", str(count), "--concurrency",
                               str(concurrency), "--seed", "7", "--timings", timings, "--quiet"])
        t_posted = time.time()
        deadline = time.time() + 600
        while count_normalized(db_url, tmp) < count:
            if time.time() > deadline:
                raise SystemExit(f"timed out: {count_normalized(db_url, tmp)} of {count} normalized")
            time.sleep(0.05)
        t_done = time.time()
        cpu_normalized = cpu_seconds(server.pid)
        # then every task (billing and calllog: the handlers that run without configuration)
        while scalar(db_url, "SELECT COUNT(*) FROM tasks WHERE done = 'n'") > 0:
            if time.time() > deadline:
                raise SystemExit("timed out waiting for tasks")
            time.sleep(0.05)
        t_tasks = time.time()
        n_tasks = scalar(db_url, "SELECT COUNT(*) FROM tasks WHERE done = 'y'")
        n_task_errors = scalar(db_url, "SELECT COUNT(*) FROM tasks WHERE done = 'error'")
        rss = peak_rss_kib(server.pid)
        cpu = cpu_normalized
        questions = mysql_questions(db_url) - questions0 if questions0 is not None else None
        stored = stored_bytes(db_url, tmp)
        # latency from the normalized files' mtimes
        mtimes = {}
        for p in glob.glob(os.path.join(tmp, "ncdr", "*", "*.xml")):
            mtimes[os.path.basename(p)[:-4]] = os.stat(p).st_mtime_ns
        lat, post_lat, first_start = [], [], None
        with open(timings) as f:
            for row in csv.DictReader(f):
                s, e = int(row["start_ns"]), int(row["end_ns"])
                first_start = s if first_start is None else min(first_start, s)
                post_lat.append((e - s) / 1e6)
                if row["uuid"] in mtimes:
                    lat.append((mtimes[row["uuid"]] - s) / 1e6)
        lat.sort(); post_lat.sort()
        last = max(mtimes.values()) if mtimes else 0
        e2e_secs = (last - first_start) / 1e9 if mtimes else (t_done - t0)
        print(f"{db:6} on {data_dir or tempfile.gettempdir()} K={count} C={concurrency} distilleries={distilleries}: "
              f"{count / e2e_secs:,.0f} CDR/s end to end ({e2e_secs:.2f}s); intake {count / (t_posted - t0):,.0f} POST/s; "
              f"POST->normalized p50 {pct(lat, 50):.1f} ms p99 {pct(lat, 99):.1f} ms; "
              f"POST answer p50 {pct(post_lat, 50):.1f} ms p99 {pct(post_lat, 99):.1f} ms; "
              f"server CPU {cpu:.1f}s ({cpu * 1e6 / count:.0f} us/CDR); peak RSS {rss / 1024:.1f} MiB", flush=True)
        print(f"{'':6}    all tasks done {t_tasks - t0:.2f}s after the first POST ({count / (t_tasks - t0):,.0f} CDR/s "
              f"with tasks): {n_tasks} tasks done, {n_task_errors} errors, executor.threads={threads}", flush=True)
        trips = (f"{questions / count:.1f} statements per CDR sent to MariaDB (Questions, with tasks, the bench's "
                 f"own polling included)" if questions is not None else "statements: in-process SQLite")
        print(f"{'':6}    stored per CDR: raw {stored['raw'] / count / 1024:.1f} KiB, normalized "
              f"{stored['ncdr'] / count / 1024:.1f} KiB, database {stored['db'] / count / 1024:.1f} KiB; {trips}",
              flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if db != "sqlite":
            drop_mysql(db_url)
        subprocess.call(["rm", "-rf", tmp])


def disk_limit(data_dir, seconds=3.0, most=5000):
    """The disk's own limit for what every CDR costs here: small files created durably (write,
    fsync the file, fsync its directory), per second, in the directory the bench writes to."""
    d = tempfile.mkdtemp(prefix="cdrmunch-disk-", dir=data_dir)
    try:
        dfd = os.open(d, os.O_RDONLY)
        start, n = time.monotonic(), 0
        while n < most and time.monotonic() - start < seconds:
            fd = os.open(os.path.join(d, f"{n}.xml"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"x" * 2048)
            os.fsync(fd)
            os.close(fd)
            os.fsync(dfd)
            n += 1
        elapsed = time.monotonic() - start
        os.close(dfd)
        return n / elapsed
    finally:
        subprocess.call(["rm", "-rf", d])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--distilleries", type=int, default=10)
    ap.add_argument("--db", choices=["sqlite", "mysql", "both"], default="both")
    ap.add_argument("--threads", type=int, default=5, help="executor.threads (the seed's prod value is 5)")
    ap.add_argument("--data-dir", default=None,
                    help="where raw/normalized CDRs and the SQLite file go (e.g. /dev/shm to measure without the disk)")
    a = ap.parse_args()
    where = a.data_dir or tempfile.gettempdir()
    print(f"disk under {where}: {disk_limit(where):,.0f} durable 2 KiB file creates/s "
          "(write + fsync + directory fsync; each CDR makes two)", flush=True)
    for db in (["sqlite", "mysql"] if a.db == "both" else [a.db]):
        run(db, a.count, a.concurrency, a.distilleries, a.data_dir, a.threads)


if __name__ == "__main__":
    main()
