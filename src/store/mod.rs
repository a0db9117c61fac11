//! The CDR database: one `Store` over sqlx's `Any` driver, its queries written once for both
//! engines and split by concern — who holds a claim (claims), `cdr_queue` (queue), `normalized_cdrs` and the tasks born
//! with them (normalized), `tasks` and `call_log` (tasks), the operator commands' queries
//! (operator), who works on it and on which shard (nodes) — with what differs between SQLite and MySQL in [`Dialect`].
//!
//! Every query is runtime-checked (`sqlx::query`), so building needs no live database.
//! Times are passed in by the caller (UTC, whole seconds) rather than taken from the
//! database clock: the two engines then behave the same and tests can drive the clock.

mod calls;
mod claims;
mod columns;
mod conflicts;
mod dialect;
mod nodes;
mod normalized;
mod operator;
mod queue;
mod tasks;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::Executor;
use sqlx::{AnyConnection, AnyPool};

pub use claims::{Claimant, TakenBack};
pub use columns::RowState;
pub use conflicts::{IntakeConflict, QueueStory, QueuedRow};
pub use dialect::Dialect;
pub use nodes::{NodeRow, ShardFilter};
pub use normalized::{CommitResult, NewNormalizedCdr, NormalizedCdrs};
pub use operator::{
    ErrorReport, PurgeCandidate, QueueError, Reconciled, RetryCdrs, RetryTasks, TaskErrorReport, TaskState,
};
pub use queue::{CdrQueue, Crash, NewQueuedCdr, QueueCounts, QueuedCdr};
pub use tasks::{CallLogEntry, ClaimedTask, TaskFinish, TaskQueue};

use crate::domain::outcome::{Backoff, Classify, Retry};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection: refused, reset, pool timeout. It may come back.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused the data itself (a value too long, a constraint): the same
    /// statement will be refused again.
    #[error("database rejected the data: {0}")]
    Rejected(#[source] sqlx::Error),
    /// Anything else the database reported (lock timeout, disk full, a restart).
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url '{0}': expected sqlite://PATH or mysql://USER@HOST/DB")]
    BadUrl(String),
    /// The caller stopped waiting (intake must answer in time); the statement may still
    /// complete.
    #[error("database did not answer: {0}")]
    TimedOut(String),
    /// The rows were certainly not written (the database failed and the spool had no room).
    #[error("{0}")]
    NotTaken(String),
}

/// MySQL's errors for data that can never be stored as it is: too long (1406), out of range
/// (1264), an incorrect value (1366, 1292), NULL in a NOT NULL column (1048).
const MYSQL_REJECTED: [u16; 5] = [1406, 1264, 1366, 1292, 1048];

/// The database's one classification: only data the database refuses, a bad URL and a failed
/// migration need a person; everything else (connection loss, deadlock, lock timeout, disk
/// full) may clear.
impl Classify for StoreError {
    fn retry(&self) -> Retry {
        match self {
            StoreError::Unavailable(_) | StoreError::Query(_) | StoreError::TimedOut(_) | StoreError::NotTaken(_) => {
                Retry::Later
            }
            StoreError::Rejected(_) | StoreError::Migrate(_) | StoreError::BadUrl(_) => Retry::Never,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        crate::events::DatabaseError.emit();
        let rejected = match &e {
            sqlx::Error::Database(db) => {
                matches!(db.kind(), sqlx::error::ErrorKind::NotNullViolation | sqlx::error::ErrorKind::CheckViolation)
                    || db
                        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                        .is_some_and(|m| MYSQL_REJECTED.contains(&m.number()))
            }
            _ => false,
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            e if rejected => StoreError::Rejected(e),
            other => StoreError::Query(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A time as the store takes it: UTC, kept at whole seconds.
pub type Time = chrono::DateTime<chrono::Utc>;

/// What the running pipeline asks of the CDR database. The actors hold it as
/// `Arc<dyn Repository>`, so a test can put a fault-injecting one in front of the `Store`.
#[async_trait]
pub trait Repository: CdrQueue + NormalizedCdrs + TaskQueue + Send + Sync + 'static {
    /// "sqlite" or "mysql", for logs.
    fn backend(&self) -> &'static str;
    /// Whether the database can take a write now (`/ready`).
    async fn ping(&self) -> StoreResult<()>;
}

/// The CDR database (or the billing database, which is opened the same way).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// Whose claims this handle makes (see `claims`); shared by its clones.
    claimant: std::sync::Arc<Claimant>,
    /// Which ids its claims take (the two-SDC setup); shared by its clones.
    shard: std::sync::Arc<ShardFilter>,
}

/// A transaction InnoDB picks as a deadlock victim is run again at once, then with a short
/// jittered backoff; past this many tries the error stands.
const RESTARTS: u32 = 8;
const RESTART_BACKOFF: Backoff = Backoff::exponential(Duration::from_millis(2), Duration::from_millis(500));

impl Store {
    /// Opens the database a `cdrdb.url` names, creating the SQLite file or the MySQL
    /// database when it does not exist yet.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Store> {
        let (dialect, url) = Dialect::of(url)?;
        dialect.prepare(&url).await?;
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(dialect.pool_size(max_connections))
            .acquire_timeout(dialect.acquire_timeout())
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Mysql {
                        dialect::set_tcp_nodelay_on_sockets();
                    }
                    for statement in dialect.session_setup() {
                        conn.execute(*statement).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Store { pool, dialect, claimant: std::sync::Arc::new(Claimant::new("")), shard: Default::default() })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pool itself, for the billing feeder's own table and for tests that look at rows
    /// no production code reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Creates or upgrades the schema (`migrations/`).
    pub async fn migrate(&self) -> StoreResult<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Dialect::Mysql => sqlx::migrate!("migrations/mysql"),
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Runs `op` in a write transaction (SQLite: holding the write lock from the start),
    /// restarted when the engine asks for it. `op` gets the transaction and hands it back
    /// with its result; it is committed then.
    pub(crate) async fn write<T, Fut>(&self, op: impl FnMut(Conn) -> Fut) -> StoreResult<T>
    where
        Fut: std::future::Future<Output = Result<(T, Conn), sqlx::Error>>,
    {
        self.restarting(true, op).await
    }

    /// Runs one statement on its own (atomic by itself on both engines), restarted when the
    /// engine asks for it.
    pub(crate) async fn write_one<T, Fut>(&self, op: impl FnMut(Conn) -> Fut) -> StoreResult<T>
    where
        Fut: std::future::Future<Output = Result<(T, Conn), sqlx::Error>>,
    {
        self.restarting(false, op).await
    }

    async fn restarting<T, Fut>(&self, in_tx: bool, mut op: impl FnMut(Conn) -> Fut) -> StoreResult<T>
    where
        Fut: std::future::Future<Output = Result<(T, Conn), sqlx::Error>>,
    {
        let mut failures = 0;
        loop {
            let attempt = async {
                let conn = match in_tx {
                    true => Conn::Tx(self.pool.begin_with(self.dialect.begin_write()).await?),
                    false => Conn::One(self.pool.acquire().await?),
                };
                let (value, conn) = op(conn).await?;
                if let Conn::Tx(tx) = conn {
                    tx.commit().await?;
                }
                Ok(value)
            }
            .await;
            match attempt {
                Err(e) if self.dialect.must_restart(&e) && failures + 1 < RESTARTS => {
                    tracing::debug!(failures, "restarting transaction after: {e}");
                    tokio::time::sleep(RESTART_BACKOFF.jittered(failures, rand::random::<f64>())).await;
                    failures += 1;
                }
                other => return other.map_err(StoreError::from),
            }
        }
    }
}

/// A connection a write runs on: a transaction, or a pooled connection for one statement.
pub(crate) enum Conn {
    Tx(sqlx::Transaction<'static, sqlx::Any>),
    One(sqlx::pool::PoolConnection<sqlx::Any>),
}

impl std::ops::Deref for Conn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            Conn::Tx(tx) => tx,
            Conn::One(c) => c,
        }
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Conn::Tx(tx) => &mut *tx,
            Conn::One(c) => &mut *c,
        }
    }
}

#[async_trait]
impl Repository for Store {
    fn backend(&self) -> &'static str {
        self.dialect.name()
    }

    /// Answers only when the database can take a write: a read alone passes on a SQLite file
    /// another process holds write-locked, or a MariaDB set read-only. The write changes no
    /// row and is rolled back.
    async fn ping(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM cdr_queue WHERE id = 0").execute(&mut *tx).await?;
        tx.rollback().await?;
        Ok(())
    }
}

/// Opens a `cdrdb.url` / `billingdb.url`.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Store> {
    Store::connect(url, max_connections).await
}

/// A database URL with its password replaced, for logs and messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real InnoDB deadlock with our transaction as the victim (it holds fewer locks than
    /// the other one): the victim is restarted and then commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deadlock_victim_is_restarted() {
        let server = std::env::var("CDRMUNCH_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let name = format!("cdrmunch_dl_{}", uuid::Uuid::new_v4().simple());
        let store = Store::connect(&format!("{server}/{name}"), 4).await.expect("MariaDB (scripts/test.sh starts one)");
        let pool = store.pool().clone();
        sqlx::query("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO t SELECT seq, 0 FROM seq_1_to_200").execute(&pool).await.unwrap();

        let attempts = std::sync::atomic::AtomicU32::new(0);
        let (attempts, pool2) = (&attempts, &pool);
        let result = store
            .write(|mut tx| async move {
                let pool = pool2.clone();
                let first = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                sqlx::query("UPDATE t SET v = v + 1 WHERE id = 1").execute(&mut *tx).await?;
                if first {
                    // The other transaction locks rows 2..=150, then waits for row 1; we then
                    // wait for row 2: a cycle, and InnoDB rolls back the lighter side — us.
                    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                    let p = pool.clone();
                    let other = tokio::spawn(async move {
                        let mut b = p.begin().await.unwrap();
                        sqlx::query("UPDATE t SET v = v + 1 WHERE id BETWEEN 2 AND 150")
                            .execute(&mut *b)
                            .await
                            .unwrap();
                        let _ = ready_tx.send(());
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        sqlx::query("UPDATE t SET v = v + 1 WHERE id = 1").execute(&mut *b).await.unwrap();
                        b.commit().await.unwrap();
                    });
                    ready_rx.await.unwrap();
                    let blocked = sqlx::query("UPDATE t SET v = v + 1 WHERE id = 2").execute(&mut *tx).await;
                    other.await.unwrap();
                    blocked?;
                }
                Ok(((), tx))
            })
            .await;
        let v1: i64 =
            sqlx::query_scalar("SELECT CAST(v AS SIGNED) FROM t WHERE id = 1").fetch_one(&pool).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`"))).execute(&pool).await;
        result.expect("restarted after the deadlock");
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(v1, 2, "the other transaction and our restarted one both committed");
    }

    #[test]
    fn urls_name_their_engine_and_passwords_are_redacted() {
        assert_eq!(Dialect::of("sqlite://d/c.db").unwrap(), (Dialect::Sqlite, "sqlite://d/c.db?mode=rwc".into()));
        assert_eq!(Dialect::of("mariadb://u@h/db").unwrap().0, Dialect::Mysql);
        assert!(matches!(Dialect::of("postgres://x"), Err(StoreError::BadUrl(_))));
        assert_eq!(redact_url("mysql://u:secret@h:3306/db"), "mysql://u:***@h:3306/db");
    }
}
