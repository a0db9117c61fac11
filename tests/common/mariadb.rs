//! A private MariaDB server for tests that stop the database itself: its own datadir, port
//! and socket, killed with SIGKILL and started again on the same datadir. Removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateMariadb {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Server options beyond the defaults (replication settings); with them the binary log
    /// is left as they say.
    extra: Vec<String>,
}

impl PrivateMariadb {
    /// Installs a datadir and starts the server; a `cdrmunch` user may do anything over TCP.
    pub fn start() -> PrivateMariadb {
        Self::start_with(&[])
    }

    /// As `start`, with more server options (e.g. `--server-id=1 --log-bin`).
    pub fn start_with(extra: &[&str]) -> PrivateMariadb {
        // Two bootstraps at once share /tmp's temporary-table names and abort each other:
        // each instance gets its own tmpdir, and bootstraps in one test binary take turns.
        static BOOTSTRAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = BOOTSTRAP.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.path().join("tmp").display()))
            .env("TMPDIR", dir.path().join("tmp"))
            .output()
            .expect("mariadb-install-db (scripts/test.sh installs MariaDB)");
        assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut db = PrivateMariadb { dir, port: super::free_port(), child: None, extra };
        db.run();
        let sql = "CREATE USER IF NOT EXISTS 'cdrmunch'@'127.0.0.1' IDENTIFIED BY 'cdrmunch'; \
                   GRANT ALL ON *.* TO 'cdrmunch'@'127.0.0.1';";
        let out = Command::new("mariadb").arg("-S").arg(db.socket()).args(["-u", "root", "-e", sql]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        db
    }

    /// `mysql://…/NAME` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("mysql://cdrmunch:cdrmunch@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL as root over the socket; panics with the server's words on failure.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .arg("-S")
            .arg(self.socket())
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first row of a query as column name → value (`SHOW SLAVE STATUS`); empty when
    /// there is no row.
    pub fn row(&self, sql: &str) -> std::collections::HashMap<String, String> {
        let out = Command::new("mariadb")
            .arg("-S")
            .arg(self.socket())
            .args(["-u", "root", "-B", "-e", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        match (lines.next(), lines.next()) {
            (Some(names), Some(values)) => {
                names.split('\t').map(String::from).zip(values.split('\t').map(String::from)).collect()
            }
            _ => Default::default(),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Starts the server on the datadir and waits (bounded) until it answers.
    pub fn run(&mut self) {
        let mariadbd = if Path::new("/usr/sbin/mariadbd").exists() { "/usr/sbin/mariadbd" } else { "mariadbd" };
        let d = self.dir.path();
        let child = Command::new(mariadbd)
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .args(if self.extra.iter().any(|a| a.starts_with("--log-bin")) { None } else { Some("--skip-log-bin") })
            .args(&self.extra)
            .args(["--innodb-buffer-pool-size=64M", "--max-connections=200"])
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("server.log")).unwrap())
            .spawn()
            .expect("mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("mariadb")
                .arg("-S")
                .arg(self.socket())
                .args(["-u", "root", "-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            let log = std::fs::read_to_string(d.join("server.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "private mariadbd did not start: {log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, as a crash or an operator's `kill -9` would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

use std::path::Path;

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        self.kill();
    }
}
