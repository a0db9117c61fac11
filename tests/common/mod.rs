//! Test harness: an app per test on 127.0.0.1 port 0 with a fresh database — a SQLite file
//! in a temp dir, or a fresh MariaDB database (dropped afterwards) on the server named by
//! CDRMUNCH_TEST_MYSQL_URL, which `scripts/test.sh` provides.
#![allow(dead_code)]

pub mod cluster;
pub mod mariadb;
pub mod sinks;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use cdrmunch::actors::Hooks;
use cdrmunch::app::App;
use cdrmunch::config::Settings;
use cdrmunch::domain::tasks::TaskType;
use cdrmunch::store::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Mysql,
}

pub const BOTH: [Db; 2] = [Db::Sqlite, Db::Mysql];

pub fn corpus_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CDRMUNCH_CORPUS_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// Every corpus file, XML and JSON.
pub fn corpus_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["xml", "json"] {
        let dir = corpus_dir().join(sub);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display())) {
            out.push(e.unwrap().path());
        }
    }
    out.sort();
    assert!(out.len() >= 16, "corpus incomplete: {out:?}");
    out
}

pub fn mysql_server_url() -> String {
    std::env::var("CDRMUNCH_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A database for one test; MariaDB ones are dropped when this goes out of scope.
pub struct TestDb {
    pub url: String,
    mysql_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn new(db: Db, dir: &Path) -> TestDb {
        match db {
            Db::Sqlite => {
                TestDb { url: format!("sqlite://{}/cdrmunch.db", dir.display()), mysql_name: None, _dir: None }
            }
            Db::Mysql => {
                let name = format!("cdrmunch_t_{}", uuid::Uuid::new_v4().simple());
                TestDb { url: format!("{}/{name}", mysql_server_url()), mysql_name: Some(name), _dir: None }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.mysql_name.take() else {
            return;
        };
        let server = mysql_server_url();
        // Drop runs outside any runtime guarantee: use a small runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::MySqlConnection::connect(&server).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                        .execute(&mut c)
                        .await;
                }
            })
        })
        .join();
    }
}

/// Settings for a test: embedded defaults under `dir`, port 0, fast polling.
pub fn test_settings(dir: &Path, db_url: &str) -> Settings {
    let mut s = Settings::embedded_default(dir);
    s.server.address = "127.0.0.1".into();
    s.server.port = 0;
    s.metrics.port = 0;
    s.database.cdrdb_url = db_url.to_string();
    s.distiller.number_of_distilleries = 4;
    s.distiller.poll_interval = Duration::from_millis(200);
    s.tasksd.poll_interval = Duration::from_millis(200);
    s
}

/// Puts a (fault-injecting) repository in front of the real one.
pub type WrapRepository<'a> = &'a dyn Fn(Arc<dyn Repository>) -> Arc<dyn Repository>;

pub struct TestApp {
    pub app: Option<App>,
    pub settings: Settings,
    pub dir: tempfile::TempDir,
    pub db: TestDb,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn start(db: Db) -> TestApp {
        Self::start_with(db, |_| {}, Hooks::default(), None).await
    }

    /// `wrap` lets a test put a fault-injecting repository in front of the real one.
    pub async fn start_with(
        db: Db,
        tweak: impl FnOnce(&mut Settings),
        hooks: Hooks,
        wrap: Option<WrapRepository<'_>>,
    ) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let tdb = TestDb::new(db, dir.path());
        let mut settings = test_settings(dir.path(), &tdb.url);
        tweak(&mut settings);
        let store = cdrmunch::app::open_repository(&settings).await.unwrap_or_else(|e| {
            panic!("{db:?} database at {} not usable ({e}); run scripts/test.sh, which starts MariaDB", tdb.url)
        });
        let repo: Arc<dyn Repository> = Arc::new(store.clone());
        let repo = match wrap {
            Some(w) => w(repo),
            None => repo,
        };
        let app = App::start_with_repository(&settings, hooks, store, repo).await.expect("app starts");
        TestApp { app: Some(app), settings, dir, db: tdb, http: reqwest::Client::new() }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("running")
    }

    /// The database as the pipeline sees it.
    pub fn repo(&self) -> Arc<dyn Repository> {
        self.app().repo.clone()
    }

    /// The database itself, for looking at what the pipeline did.
    pub fn store(&self) -> &Store {
        &self.app().store
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app().addr)
    }

    /// POST raw bytes to /api/v2/cdr with an optional query and content type.
    pub async fn post_cdr(&self, body: Vec<u8>, query: &str, content_type: &str) -> (u16, String) {
        let r = self
            .http
            .post(self.url(&format!("/api/v2/cdr{query}")))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Waits (bounded) until every task of the call `uuid` has left done='n'; returns them.
    pub async fn wait_tasks_finished(&self, uuid: &str, timeout: Duration) -> Vec<TaskState> {
        let key = *uuid::Uuid::parse_str(uuid).unwrap().as_bytes();
        let deadline = Instant::now() + timeout;
        loop {
            let tasks = self.store().task_states(key).await.unwrap();
            if !tasks.is_empty() && tasks.iter().all(|t| t.done != "n") {
                return tasks;
            }
            assert!(Instant::now() < deadline, "tasks of {uuid} not finished in {timeout:?}: {tasks:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until no task of the call `uuid` is pending; returns them (none for a
    /// call that got no tasks).
    pub async fn wait_tasks_finished_or_none(&self, uuid: &str, timeout: Duration) -> Vec<TaskState> {
        let key = *uuid::Uuid::parse_str(uuid).unwrap().as_bytes();
        let deadline = Instant::now() + timeout;
        loop {
            let tasks = self.store().task_states(key).await.unwrap();
            if tasks.iter().all(|t| t.done != "n") {
                return tasks;
            }
            assert!(Instant::now() < deadline, "tasks of {uuid} not finished in {timeout:?}: {tasks:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until `done` CDRs are normalized and nothing is pending.
    pub async fn wait_settled(&self, normalized: u64, timeout: Duration) -> QueueCounts {
        let store = self.store();
        let deadline = Instant::now() + timeout;
        loop {
            let c = store.queue_counts().await.unwrap();
            let (n, _) = store.normalized_counts().await.unwrap();
            if c.pending == 0 && n >= normalized {
                return c;
            }
            assert!(Instant::now() < deadline, "not settled in {timeout:?}: {c:?}, normalized {n} of {normalized}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the service but keeps its database and directory (operator tests).
    pub async fn halt(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown(Duration::from_secs(10)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown(Duration::from_secs(10)).await;
        }
    }
}

/// Files below `dir` (recursively), for "nothing half written" checks.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A repository that fails every call while `down` is set: the database "goes away".
pub struct SwitchableRepository {
    pub inner: Arc<dyn Repository>,
    pub down: Arc<AtomicBool>,
}

impl SwitchableRepository {
    fn check(&self) -> StoreResult<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Repository for SwitchableRepository {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> StoreResult<()> {
        self.check()?;
        self.inner.ping().await
    }
}

#[async_trait]
impl CdrQueue for SwitchableRepository {
    async fn enqueue_cdrs(&self, rows: &[NewQueuedCdr]) -> StoreResult<u64> {
        self.check()?;
        self.inner.enqueue_cdrs(rows).await
    }
    async fn queued_paths(&self, uuids: &[[u8; 16]]) -> StoreResult<Vec<([u8; 16], String)>> {
        self.check()?;
        self.inner.queued_paths(uuids).await
    }
    async fn claim_cdrs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueuedCdr>> {
        self.check()?;
        self.inner.claim_cdrs(now, lease_until, limit).await
    }
    async fn renew_claims(&self, ids: &[u64], until: DateTime<Utc>) -> StoreResult<u64> {
        self.check()?;
        self.inner.renew_claims(ids, until).await
    }
    async fn release_claims(&self, ids: &[u64]) -> StoreResult<()> {
        self.check()?;
        self.inner.release_claims(ids).await
    }
    async fn schedule_retry(&self, cdr_id: u64, next: DateTime<Utc>, d: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.check()?;
        self.inner.schedule_retry(cdr_id, next, d, now).await
    }
    async fn mark_error(&self, cdr_id: u64, d: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.check()?;
        self.inner.mark_error(cdr_id, d, now).await
    }
    async fn record_crash(
        &self,
        cdr_id: u64,
        reason: &str,
        threshold: u32,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Crash> {
        self.check()?;
        self.inner.record_crash(cdr_id, reason, threshold, retry_at, now).await
    }
}

#[async_trait]
impl NormalizedCdrs for SwitchableRepository {
    async fn commit_normalized(
        &self,
        batch: &[(u64, NewNormalizedCdr)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<CommitResult>> {
        self.check()?;
        self.inner.commit_normalized(batch, now).await
    }
}

#[async_trait]
impl TaskQueue for SwitchableRepository {
    async fn claim_tasks(
        &self,
        task_type: TaskType,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedTask>> {
        self.check()?;
        self.inner.claim_tasks(task_type, now, lease_until, limit).await
    }
    async fn renew_tasks(&self, ids: &[u64], until: DateTime<Utc>) -> StoreResult<u64> {
        self.check()?;
        self.inner.renew_tasks(ids, until).await
    }
    async fn finish_task(&self, task_id: u64, claim: u64, finish: &TaskFinish) -> StoreResult<bool> {
        self.check()?;
        self.inner.finish_task(task_id, claim, finish).await
    }
    async fn release_tasks(&self, ids: &[u64], now: DateTime<Utc>) -> StoreResult<()> {
        self.check()?;
        self.inner.release_tasks(ids, now).await
    }
}

/// `(task_type, node_index)` of every task of a normalized uuid, by node_index.
pub async fn tasks_of(store: &Store, uuid: [u8; 16]) -> Vec<(String, u32)> {
    store.task_states(uuid).await.unwrap().into_iter().map(|t| (t.task_type.to_string(), t.node_index)).collect()
}

/// Every normalized call uuid.
pub async fn normalized_uuids(store: &Store) -> Vec<[u8; 16]> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT uuid FROM normalized_cdrs").fetch_all(store.pool()).await.unwrap();
    rows.iter().map(|r| r.get::<Vec<u8>, _>(0).try_into().expect("16 bytes")).collect()
}

/// A `cdrmunch serve` child process, killed (and reaped) if a test fails halfway.
pub struct Server(pub std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    sinks::free_port()
}

/// Runs the real binary: `cdrmunch serve --config <config> [extra…]`, with `RUST_LOG` set to
/// `rust_log` or, for None, left to the config's `log.level`.
pub fn start_server_with(config: &Path, extra: &[&str], rust_log: Option<&str>) -> Server {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cdrmunch"));
    cmd.args(["serve", "--config"]).arg(config).args(extra).env_remove("RUST_LOG");
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn cdrmunch serve");
    Server(child)
}

/// A config for the real binary on SQLite with everything under `dir`, on a free port, with
/// no pid file unless `extra` sets one; returns it and the base URL.
pub fn serve_config(dir: &Path, extra: &str) -> (PathBuf, String) {
    let port = free_port();
    let d = dir.display();
    let conf = dir.join("cdrmunch.conf");
    std::fs::write(
        &conf,
        format!(
            "server.address = 127.0.0.1\nserver.port = {port}\ncdrdb.url = sqlite://{d}/cdrmunch.db\n\
             billingdb.url = sqlite://{d}/billing.db\nrequest_handler.cdr_base_dir = {d}/cdr\n\
             request_handler.paging_base_dir = {d}/paging\nrequest_handler.pcap_base_dir = {d}/pcap\n\
             cdr_base_dir = {d}/cdr\nnormalized_cdr_base_dir = {d}/ncdr\nmetrics.port = 0\n{extra}\n"
        ),
    )
    .unwrap();
    (conf, format!("http://127.0.0.1:{port}"))
}

/// Waits (bounded) for the real binary to exit.
pub async fn wait_exit(server: &mut Server, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn start_server(config: &Path) -> Server {
    start_server_with(config, &[], Some("cdrmunch=warn"))
}

pub async fn wait_healthy(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal mod_xml_cdr document: an inbound A-leg from 1001 to 2000, answered, 42 s billed.
pub fn answered_cdr(uuid: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\n<cdr><variables><uuid>{uuid}</uuid><direction>inbound</direction>\
         <start_epoch>1700000000</start_epoch><answer_epoch>1700000003</answer_epoch><end_epoch>1700000045</end_epoch>\
         <billsec>42</billsec><hangup_cause>NORMAL_CLEARING</hangup_cause></variables>\
         <callflow><caller_profile><caller_id_number>1001</caller_id_number>\
         <destination_number>2000</destination_number></caller_profile></callflow></cdr>"
    )
    .into_bytes()
}

/// One row of a query whose columns are all text (`CAST(.. AS CHAR)` reads as text on both
/// engines), with one bound parameter.
pub async fn text_row(db: Db, url: &str, sql: &'static str, param: &str) -> Vec<String> {
    use sqlx::Row;
    match db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let r = sqlx::query(sql).bind(param.to_string()).fetch_one(&pool).await.unwrap();
            (0..r.len()).map(|i| r.get::<String, _>(i)).collect()
        }
        Db::Mysql => {
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            let r = sqlx::query(sql).bind(param.to_string()).fetch_one(&pool).await.unwrap();
            (0..r.len()).map(|i| r.get::<String, _>(i)).collect()
        }
    }
}
