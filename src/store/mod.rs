//! The CDR database behind one interface, with a MySQL/MariaDB and a SQLite implementation.
//!
//! Every query is runtime-checked (`sqlx::query`), so building needs no live database.
//! Times are passed in by the caller (UTC, whole seconds) rather than taken from the
//! database clock: the two engines then behave the same and tests can drive the clock.

/// The distilleries' batch commit, the same SQL on both engines (ids travel as i64): a fixed
/// number of statements per batch, whatever its size, since each is a round trip (for
/// SQLite, to its worker thread). A macro, because the sqlx trait bounds of one function
/// generic over both engines would be longer than the body.
macro_rules! commit_normalized_batch {
    ($db:ty, $tx:expr, $batch:expr, $now:expr) => {{
        let mut tx = $tx;
        let batch: &[(u64, NewNormalizedCdr)] = $batch;
        let uuids_in = |head: &'static str, rows: &mut dyn Iterator<Item = [u8; 16]>| {
            let mut qb: QueryBuilder<$db> = QueryBuilder::new(head);
            let mut sep = qb.separated(", ");
            for u in rows {
                sep.push_bind(u.to_vec());
            }
            qb.push(")");
            qb
        };
        let mut qb =
            uuids_in("SELECT uuid FROM normalized_cdrs WHERE uuid IN (", &mut batch.iter().map(|(_, c)| c.uuid));
        let existing: Vec<[u8; 16]> =
            qb.build().fetch_all(&mut *tx).await?.iter().map(|r| uuid_bytes(&r.get::<Vec<u8>, _>(0))).collect();
        let plan = plan_commit(batch, &existing);
        let fresh: Vec<&NewNormalizedCdr> = plan.fresh.iter().map(|&i| &batch[i].1).collect();
        let mut ids: Vec<([u8; 16], u64)> = Vec::new();
        if !fresh.is_empty() {
            let mut qb: QueryBuilder<$db> =
                QueryBuilder::new("INSERT INTO normalized_cdrs (uuid, path, cdr_path, TableSuffix, rmOrgID) ");
            qb.push_values(&fresh, |mut b, c| {
                b.push_bind(c.uuid.to_vec())
                    .push_bind(c.path.clone())
                    .push_bind(c.cdr_path.clone())
                    .push_bind(c.table_suffix)
                    .push_bind(c.org_id);
            });
            qb.build().execute(&mut *tx).await?;
            let mut qb = uuids_in(
                "SELECT CAST(id AS SIGNED), uuid FROM normalized_cdrs WHERE uuid IN (",
                &mut fresh.iter().map(|c| c.uuid),
            );
            ids = qb
                .build()
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| (uuid_bytes(&r.get::<Vec<u8>, _>(1)), r.get::<i64, _>(0) as u64))
                .collect();
            let t = sql_time($now);
            for chunk in plan.task_rows(batch, &ids).chunks(MAX_ROWS_PER_INSERT) {
                let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                    "INSERT INTO tasks (id_normalized_cdrs, task_type, create_time, next_attempt, node_index) ",
                );
                qb.push_values(chunk, |mut b, (nid, ty, idx)| {
                    b.push_bind(*nid as i64)
                        .push_bind(ty.to_string())
                        .push_bind(t.clone())
                        .push_bind(t.clone())
                        .push_bind(*idx as i64);
                });
                qb.build().execute(&mut *tx).await?;
            }
        }
        let mut qb: QueryBuilder<$db> = QueryBuilder::new("UPDATE cdr_queue SET done = 'y' WHERE id IN (");
        let mut sep = qb.separated(", ");
        for (id, _) in batch {
            sep.push_bind(*id as i64);
        }
        qb.push(")");
        qb.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(plan.results(batch, &ids))
    }};
}

/// `Repository::finish_task`, the same SQL on both engines.
macro_rules! finish_task_on {
    ($pool:expr, $task_id:expr, $finish:expr) => {{
        let id = $task_id as i64;
        let q = match $finish {
            TaskFinish::Done => sqlx::query("UPDATE tasks SET done = 'y' WHERE id = ? AND done = 'n'").bind(id),
            TaskFinish::Retry { next_attempt, error } => sqlx::query(
                "UPDATE tasks SET retry = retry + 1, next_attempt = ?, error_message = ? WHERE id = ? AND done = 'n'",
            )
            .bind(sql_time(*next_attempt))
            .bind(error.clone())
            .bind(id),
            TaskFinish::Error { error } => {
                sqlx::query("UPDATE tasks SET done = 'error', error_message = ? WHERE id = ? AND done = 'n'")
                    .bind(error.clone())
                    .bind(id)
            }
        };
        Ok(q.execute($pool).await?.rows_affected() > 0)
    }};
}

/// `Repository::release_tasks`: unstarted claims due again now.
macro_rules! release_tasks_on {
    ($db:ty, $pool:expr, $ids:expr, $now:expr) => {{
        for chunk in $ids.chunks(MAX_ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<$db> = QueryBuilder::new("UPDATE tasks SET next_attempt = ");
            qb.push_bind(sql_time($now)).push(" WHERE done = 'n' AND id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id as i64);
            }
            qb.push(")");
            qb.build().execute($pool).await?;
        }
        Ok(())
    }};
}

/// `Repository::task_states`.
macro_rules! task_states_on {
    ($pool:expr, $uuid:expr) => {{
        let rows = sqlx::query(
            "SELECT CAST(t.id AS SIGNED), t.task_type, CAST(t.node_index AS SIGNED), t.done, \
             CAST(t.retry AS SIGNED), t.error_message FROM tasks t \
             JOIN normalized_cdrs n ON n.id = t.id_normalized_cdrs WHERE n.uuid = ? ORDER BY t.node_index",
        )
        .bind($uuid.to_vec())
        .fetch_all($pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| TaskState {
                id: r.get::<i64, _>(0) as u64,
                task_type: r.get(1),
                node_index: r.get::<i64, _>(2) as u32,
                done: r.get(3),
                retry: r.get::<i64, _>(4) as u32,
                error_message: r.get(5),
            })
            .collect())
    }};
}

/// `Repository::insert_call_log`; `$insert` is the engine's insert-unless-exists verb.
macro_rules! insert_call_log_on {
    ($pool:expr, $insert:literal, $e:expr) => {{
        let e: &CallLogEntry = $e;
        let done = sqlx::query(concat!(
            $insert,
            " INTO call_log (uuid, rmOrgID, TableSuffix, direction, caller_id_number, destination_number, \
             start_epoch, answer_epoch, end_epoch, duration, billsec, hangup_cause, recording_path) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(e.uuid.to_vec())
        .bind(e.org_id)
        .bind(e.table_suffix)
        .bind(e.direction.clone())
        .bind(e.caller_id_number.clone())
        .bind(e.destination_number.clone())
        .bind(e.start_epoch)
        .bind(e.answer_epoch)
        .bind(e.end_epoch)
        .bind(e.duration)
        .bind(e.billsec)
        .bind(e.hangup_cause.clone())
        .bind(e.recording_path.clone())
        .execute($pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }};
}

mod mysql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use mysql::MysqlRepository;
pub use sqlite::SqliteRepository;

/// A new `cdr_queue` row, written by intake once the raw CDR is durable on disk.
#[derive(Debug, Clone)]
pub struct NewQueuedCdr {
    pub uuid: [u8; 16],
    pub freeswitch_host: String,
    pub path: String,
    pub create_time: i64,
}

/// A claimed `cdr_queue` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCdr {
    pub id: u64,
    pub uuid: [u8; 16],
    pub freeswitch_host: String,
    pub path: String,
    pub create_time: i64,
    pub retry: u32,
}

/// What the distillery commits for one CDR, in one transaction.
#[derive(Debug, Clone)]
pub struct NewNormalizedCdr {
    pub uuid: [u8; 16],
    pub path: String,
    pub cdr_path: String,
    pub table_suffix: i64,
    pub org_id: i64,
    /// `(task_type, node_index)` for each `<task>` node that was kept.
    pub tasks: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitResult {
    Committed {
        normalized_id: u64,
    },
    /// The call uuid was normalized before: the queue row is marked done, nothing else.
    Duplicate,
}

/// Row counts per `done` state, for tests, `status` and health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub pending: u64,
    pub done: u64,
    pub error: u64,
}

/// A `cdr_queue_error` row joined to its queue row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueError {
    pub id_cdr_queue: u64,
    pub uuid: [u8; 16],
    pub done: String,
    pub description: String,
    pub critical: bool,
}

/// A claimed `tasks` row, joined to its normalized CDR so the executor can find the
/// `<task>` node at `node_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTask {
    pub id: u64,
    pub id_normalized_cdrs: u64,
    pub task_type: String,
    pub node_index: u32,
    /// Failures so far.
    pub retry: u32,
    pub create_time: DateTime<Utc>,
    pub uuid: [u8; 16],
    /// `normalized_cdrs.path`: where the normalized XML is.
    pub ncdr_path: String,
    /// `normalized_cdrs.cdr_path`: where the raw CDR is.
    pub cdr_path: String,
}

/// The `tasks` columns of a claim, before its normalized CDR is joined in.
pub(crate) struct TaskHead {
    pub id: u64,
    pub id_normalized_cdrs: u64,
    pub task_type: String,
    pub node_index: u32,
    pub retry: u32,
    pub create_time: DateTime<Utc>,
}

/// Claims joined to their normalized CDRs `(id, uuid, path, cdr_path)`, ordered by task id.
pub(crate) fn join_claims(
    heads: Vec<TaskHead>,
    cdrs: impl Iterator<Item = (u64, [u8; 16], String, String)>,
) -> Vec<ClaimedTask> {
    let cdrs: std::collections::HashMap<u64, ([u8; 16], String, String)> =
        cdrs.map(|(id, uuid, path, cdr_path)| (id, (uuid, path, cdr_path))).collect();
    let mut out: Vec<ClaimedTask> = heads
        .into_iter()
        .filter_map(|h| {
            let (uuid, ncdr_path, cdr_path) = cdrs.get(&h.id_normalized_cdrs)?.clone();
            Some(ClaimedTask {
                id: h.id,
                id_normalized_cdrs: h.id_normalized_cdrs,
                task_type: h.task_type,
                node_index: h.node_index,
                retry: h.retry,
                create_time: h.create_time,
                uuid,
                ncdr_path,
                cdr_path,
            })
        })
        .collect();
    out.sort_by_key(|t| t.id);
    out
}

/// How a task attempt ended, as the `tasks` row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskFinish {
    /// `done='y'`.
    Done,
    /// `retry`+1, due again at `next_attempt`, the error kept in `error_message`.
    Retry { next_attempt: DateTime<Utc>, error: String },
    /// `done='error'`: permanent, or out of retries.
    Error { error: String },
}

/// A `tasks` row as an operator or a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub id: u64,
    pub task_type: String,
    pub node_index: u32,
    pub done: String,
    pub retry: u32,
    pub error_message: Option<String>,
}

/// One `call_log` row (the calllog task's effect).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallLogEntry {
    pub uuid: [u8; 16],
    pub org_id: i64,
    pub table_suffix: i64,
    pub direction: String,
    pub caller_id_number: String,
    pub destination_number: String,
    pub start_epoch: i64,
    pub answer_epoch: i64,
    pub end_epoch: i64,
    pub duration: i64,
    pub billsec: i64,
    pub hangup_cause: String,
    pub recording_path: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url '{0}': expected sqlite://PATH or mysql://USER@HOST/DB")]
    BadUrl(String),
}

impl StoreError {
    /// Whether trying again later can succeed. Everything the database reports is treated
    /// as transient (connection loss, deadlock, lock timeout, disk full) except a bad URL
    /// and a failed migration, which need an operator.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Query(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        metrics::counter!(crate::telemetry::DATABASE_ERRORS).increment(1);
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            other => StoreError::Query(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The CDR database. One implementation per engine; callers hold `Arc<dyn Repository>`.
#[async_trait]
pub trait Repository: Send + Sync + 'static {
    /// "sqlite" or "mysql", for logs.
    fn backend(&self) -> &'static str;
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;

    /// Group commit from intake: all rows in one transaction. A row whose uuid is
    /// already queued is skipped (a FreeSWITCH retry). Returns how many were new.
    async fn enqueue_cdrs(&self, rows: &[NewQueuedCdr]) -> StoreResult<u64>;

    /// Claims up to `limit` due rows (`done='n'`, `next_attempt` NULL or <= now) by setting
    /// `next_attempt = lease_until`, so a crashed process's claims come back on their own.
    async fn claim_cdrs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueuedCdr>>;

    /// For each `(cdr_queue.id, record)`: inserts `normalized_cdrs` and its tasks and sets
    /// `done='y'` — the whole batch in one transaction. A uuid normalized before is a
    /// `Duplicate` (its queue row is still marked done); the others are unaffected by it.
    async fn commit_normalized(
        &self,
        batch: &[(u64, NewNormalizedCdr)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<CommitResult>>;

    /// Retriable or internal failure: `retry`+1, due again at `next_attempt`, reason kept in
    /// `cdr_queue_error` (critical='n') so an operator sees why it is waiting.
    async fn schedule_retry(
        &self,
        cdr_id: u64,
        next_attempt: DateTime<Utc>,
        description: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Permanent failure or poison pill: `done='error'` plus the description. A row that is
    /// already done stays done (a distillery can die while its commit completes).
    async fn mark_error(&self, cdr_id: u64, description: &str, critical: bool, now: DateTime<Utc>) -> StoreResult<()>;

    /// Gives claimed rows back (shutdown): due immediately for whoever polls next.
    async fn release_claims(&self, ids: &[u64]) -> StoreResult<()>;

    async fn queue_counts(&self) -> StoreResult<QueueCounts>;
    async fn queue_errors(&self) -> StoreResult<Vec<QueueError>>;
    /// Number of normalized CDRs and of tasks, for tests and the bench.
    async fn normalized_counts(&self) -> StoreResult<(u64, u64)>;
    /// `(task_type, done, count)` for the metrics gauges; served by `idx_type_done_next`.
    async fn task_counts(&self) -> StoreResult<Vec<(String, String, u64)>>;
    /// Every normalized call uuid (tests, bench).
    async fn normalized_uuids(&self) -> StoreResult<Vec<[u8; 16]>>;
    /// Task types per normalized uuid, ordered by node_index.
    async fn tasks_for(&self, uuid: [u8; 16]) -> StoreResult<Vec<(String, u32)>>;

    /// Claims up to `limit` due tasks of one type (`done='n'`, `next_attempt <= now`, via
    /// `idx_type_done_next`) by moving `next_attempt` to `lease_until`.
    async fn claim_tasks(
        &self,
        task_type: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedTask>>;

    /// Records an attempt's end. Only a row still `done='n'` changes, so a late duplicate
    /// attempt cannot undo a finished one. Returns whether the row changed.
    async fn finish_task(&self, task_id: u64, finish: &TaskFinish) -> StoreResult<bool>;

    /// Gives claimed, unstarted tasks back (shutdown): due at `now`.
    async fn release_tasks(&self, ids: &[u64], now: DateTime<Utc>) -> StoreResult<()>;

    /// Every task of a normalized uuid with its state, by node_index (tests, operators).
    async fn task_states(&self, uuid: [u8; 16]) -> StoreResult<Vec<TaskState>>;

    /// Inserts a call log row unless one exists for the uuid. Returns whether it was new.
    async fn insert_call_log(&self, entry: &CallLogEntry) -> StoreResult<bool>;
}

/// Opens the repository named by a `cdrdb.url`.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Repository>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteRepository::connect(url, max_connections).await?))
    } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
        let url = url.replacen("mariadb:", "mysql:", 1);
        Ok(Arc::new(MysqlRepository::connect(&url, max_connections).await?))
    } else {
        Err(StoreError::BadUrl(url.to_string()))
    }
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

/// `DATETIME` text in UTC at whole seconds, the form both engines compare correctly.
pub(crate) fn sql_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Reads back what [`sql_time`] wrote (or MySQL's `DATE_FORMAT` of a DATETIME).
pub(crate) fn parse_sql_time(s: &str) -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S").map(|t| t.and_utc()).unwrap_or_default()
}

pub(crate) fn uuid_bytes(v: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = v.len().min(16);
    out[..n].copy_from_slice(&v[..n]);
    out
}

/// Which rows of a commit batch are new: a uuid normalized before, or repeated within the
/// batch, is a duplicate (its queue row is still marked done).
pub(crate) struct CommitPlan {
    /// Indexes into the batch of the rows to insert.
    pub fresh: Vec<usize>,
}

pub(crate) fn plan_commit(batch: &[(u64, NewNormalizedCdr)], existing: &[[u8; 16]]) -> CommitPlan {
    let mut seen: std::collections::HashSet<[u8; 16]> = existing.iter().copied().collect();
    CommitPlan { fresh: (0..batch.len()).filter(|&i| seen.insert(batch[i].1.uuid)).collect() }
}

impl CommitPlan {
    /// `(normalized id, task type, node_index)` for every task of the inserted rows.
    pub fn task_rows<'a>(
        &self,
        batch: &'a [(u64, NewNormalizedCdr)],
        ids: &[([u8; 16], u64)],
    ) -> Vec<(u64, &'a str, u32)> {
        let id_of = |u: &[u8; 16]| ids.iter().find(|(x, _)| x == u).map(|(_, id)| *id);
        self.fresh
            .iter()
            .filter_map(|&i| id_of(&batch[i].1.uuid).map(|id| (id, &batch[i].1)))
            .flat_map(|(id, c)| c.tasks.iter().map(move |(ty, idx)| (id, ty.as_str(), *idx)))
            .collect()
    }

    pub fn results(&self, batch: &[(u64, NewNormalizedCdr)], ids: &[([u8; 16], u64)]) -> Vec<CommitResult> {
        (0..batch.len())
            .map(|i| match ids.iter().find(|(u, _)| *u == batch[i].1.uuid) {
                Some((_, id)) if self.fresh.contains(&i) => CommitResult::Committed { normalized_id: *id },
                _ => CommitResult::Duplicate,
            })
            .collect()
    }
}

/// Per-row bind count stays far below both engines' placeholder limits.
pub(crate) const MAX_ROWS_PER_INSERT: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(uuid: u8, tasks: &[&str]) -> NewNormalizedCdr {
        NewNormalizedCdr {
            uuid: [uuid; 16],
            path: String::new(),
            cdr_path: String::new(),
            table_suffix: 0,
            org_id: 0,
            tasks: tasks.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect(),
        }
    }

    #[test]
    fn a_commit_plan_skips_known_and_repeated_uuids() {
        let batch = vec![
            (10, row(1, &["billing", "calllog"])),
            (11, row(2, &["calllog"])),
            (12, row(1, &[])),
            (13, row(3, &[])),
        ];
        let plan = plan_commit(&batch, &[[2; 16]]);
        assert_eq!(plan.fresh, vec![0, 3]);
        let ids = [([1; 16], 100), ([3; 16], 101)];
        assert_eq!(plan.task_rows(&batch, &ids), vec![(100, "billing", 0), (100, "calllog", 1)]);
        assert_eq!(
            plan.results(&batch, &ids),
            vec![
                CommitResult::Committed { normalized_id: 100 },
                CommitResult::Duplicate,
                CommitResult::Duplicate,
                CommitResult::Committed { normalized_id: 101 }
            ]
        );
    }
}
