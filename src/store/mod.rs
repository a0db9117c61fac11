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

/// The operator commands' queries, the same SQL on both engines (`CAST(.. AS SIGNED)` and
/// `CAST(.. AS CHAR)` mean the same to both). Each engine's `write_tx` opens a write
/// transaction the way that engine wants it.
macro_rules! operator_methods {
    ($repo:ty, $db:ty) => {
        #[async_trait]
        impl Operations for $repo {
        async fn stuck_cdrs(&self, created_before: i64) -> StoreResult<u64> {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cdr_queue WHERE done = 'n' AND create_time < ?")
                .bind(created_before)
                .fetch_one(&self.pool)
                .await?;
            Ok(n as u64)
        }

        async fn recent_errors(&self, limit: u32) -> StoreResult<Vec<ErrorReport>> {
            let rows = sqlx::query(
                "SELECT CAST(e.id_cdr_queue AS SIGNED), q.uuid, CAST(q.done AS CHAR), CAST(q.retry AS SIGNED), \
                 CAST(e.critical AS CHAR), CAST(e.last_error_date AS CHAR), COALESCE(e.description, '') \
                 FROM cdr_queue_error e JOIN cdr_queue q ON q.id = e.id_cdr_queue WHERE q.done <> 'y' \
                 ORDER BY e.last_error_date DESC, e.id DESC LIMIT ?",
            )
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| ErrorReport {
                    id_cdr_queue: r.get::<i64, _>(0) as u64,
                    uuid: uuid_bytes(&r.get::<Vec<u8>, _>(1)),
                    done: r.get(2),
                    retry: r.get::<i64, _>(3) as u32,
                    critical: r.get::<String, _>(4) == "y",
                    last_error: r.get::<Option<String>, _>(5).unwrap_or_default(),
                    description: r.get(6),
                })
                .collect())
        }

        async fn recent_task_errors(&self, limit: u32) -> StoreResult<Vec<TaskErrorReport>> {
            let rows = sqlx::query(
                "SELECT CAST(t.id AS SIGNED), t.task_type, n.uuid, CAST(t.retry AS SIGNED), \
                 COALESCE(t.error_message, '') FROM tasks t JOIN normalized_cdrs n ON n.id = t.id_normalized_cdrs \
                 WHERE t.done = 'error' ORDER BY t.id DESC LIMIT ?",
            )
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| TaskErrorReport {
                    id: r.get::<i64, _>(0) as u64,
                    task_type: r.get(1),
                    uuid: uuid_bytes(&r.get::<Vec<u8>, _>(2)),
                    retry: r.get::<i64, _>(3) as u32,
                    error_message: r.get(4),
                })
                .collect())
        }

        async fn retry_cdrs(&self, which: &RetryCdrs) -> StoreResult<u64> {
            let q = match which {
                RetryCdrs::One(id) => sqlx::query(
                    "UPDATE cdr_queue SET done = 'n', retry = 0, next_attempt = NULL WHERE id = ? AND done <> 'y'",
                )
                .bind(*id as i64),
                RetryCdrs::Errors => {
                    sqlx::query("UPDATE cdr_queue SET done = 'n', retry = 0, next_attempt = NULL WHERE done = 'error'")
                }
            };
            Ok(q.execute(&self.pool).await?.rows_affected())
        }

        async fn retry_tasks(&self, which: &RetryTasks, now: DateTime<Utc>) -> StoreResult<u64> {
            let t = sql_time(now);
            let q = match which {
                RetryTasks::One(id) => {
                    sqlx::query("UPDATE tasks SET done = 'n', retry = 0, next_attempt = ? WHERE id = ?")
                        .bind(t)
                        .bind(*id as i64)
                }
                RetryTasks::Errors { task_type: None } => {
                    sqlx::query("UPDATE tasks SET done = 'n', retry = 0, next_attempt = ? WHERE done = 'error'").bind(t)
                }
                RetryTasks::Errors { task_type: Some(ty) } => sqlx::query(
                    "UPDATE tasks SET done = 'n', retry = 0, next_attempt = ? WHERE done = 'error' AND task_type = ?",
                )
                .bind(t)
                .bind(ty.clone()),
            };
            Ok(q.execute(&self.pool).await?.rows_affected())
        }

        async fn purge_candidates(
            &self,
            created_before: DateTime<Utc>,
            after_id: u64,
            limit: u32,
        ) -> StoreResult<Vec<PurgeCandidate>> {
            let rows = sqlx::query(
                "SELECT CAST(n.id AS SIGNED), n.uuid, n.path FROM normalized_cdrs n \
                 WHERE n.created_at < ? AND n.id > ? AND NOT EXISTS \
                 (SELECT 1 FROM tasks t WHERE t.id_normalized_cdrs = n.id AND t.done = 'n') \
                 ORDER BY n.id LIMIT ?",
            )
            .bind(sql_time(created_before))
            .bind(after_id as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| PurgeCandidate {
                    id: r.get::<i64, _>(0) as u64,
                    uuid: uuid_bytes(&r.get::<Vec<u8>, _>(1)),
                    path: r.get(2),
                })
                .collect())
        }

        async fn delete_normalized(&self, ids: &[u64]) -> StoreResult<u64> {
            if ids.is_empty() {
                return Ok(0);
            }
            let mut tx = self.write_tx().await?;
            let mut deleted = 0;
            for head in ["DELETE FROM tasks WHERE id_normalized_cdrs IN (", "DELETE FROM normalized_cdrs WHERE id IN ("] {
                let mut qb: QueryBuilder<$db> = QueryBuilder::new(head);
                let mut sep = qb.separated(", ");
                for id in ids {
                    sep.push_bind(*id as i64);
                }
                qb.push(")");
                deleted = qb.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(deleted)
        }

        async fn replay_candidates(
            &self,
            from: i64,
            to: i64,
            after_id: u64,
            limit: u32,
        ) -> StoreResult<Vec<QueuedCdr>> {
            let rows = sqlx::query(
                "SELECT CAST(id AS SIGNED), uuid, freeswitch_host, path, CAST(create_time AS SIGNED), \
                 CAST(retry AS SIGNED) FROM cdr_queue WHERE done = 'y' AND create_time >= ? AND create_time < ? \
                 AND id > ? ORDER BY id LIMIT ?",
            )
            .bind(from)
            .bind(to)
            .bind(after_id as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| QueuedCdr {
                    id: r.get::<i64, _>(0) as u64,
                    uuid: uuid_bytes(&r.get::<Vec<u8>, _>(1)),
                    freeswitch_host: r.get(2),
                    path: r.get(3),
                    create_time: r.get(4),
                    retry: r.get::<i64, _>(5) as u32,
                })
                .collect())
        }

        async fn normalized_of(&self, uuid: [u8; 16]) -> StoreResult<Option<(u64, String)>> {
            let row = sqlx::query("SELECT CAST(id AS SIGNED), path FROM normalized_cdrs WHERE uuid = ?")
                .bind(uuid.to_vec())
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|r| (r.get::<i64, _>(0) as u64, r.get(1))))
        }

        async fn renormalized(
            &self,
            normalized_id: u64,
            row: &NewNormalizedCdr,
            now: DateTime<Utc>,
        ) -> StoreResult<Reconciled> {
            let nid = normalized_id as i64;
            let mut tx = self.write_tx().await?;
            sqlx::query("UPDATE normalized_cdrs SET path = ?, TableSuffix = ?, rmOrgID = ? WHERE id = ?")
                .bind(row.path.clone())
                .bind(row.table_suffix)
                .bind(row.org_id)
                .bind(nid)
                .execute(&mut *tx)
                .await?;
            let existing: Vec<(i64, String, String, i64)> = sqlx::query(
                "SELECT CAST(id AS SIGNED), task_type, CAST(done AS CHAR), CAST(node_index AS SIGNED) \
                 FROM tasks WHERE id_normalized_cdrs = ?",
            )
            .bind(nid)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
            let plan = plan_reconcile(&existing, &row.tasks);
            for (id, idx) in &plan.repoint {
                sqlx::query("UPDATE tasks SET node_index = ? WHERE id = ?").bind(*idx).bind(*id).execute(&mut *tx).await?;
            }
            for id in &plan.drop {
                sqlx::query("DELETE FROM tasks WHERE id = ? AND done = 'n'").bind(*id).execute(&mut *tx).await?;
            }
            let t = sql_time(now);
            for (ty, idx) in &plan.add {
                sqlx::query(
                    "INSERT INTO tasks (id_normalized_cdrs, task_type, create_time, next_attempt, node_index) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(nid)
                .bind(ty.clone())
                .bind(t.clone())
                .bind(t.clone())
                .bind(*idx)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(Reconciled {
                added: plan.add.len() as u64,
                repointed: plan.repoint.len() as u64,
                dropped: plan.drop.len() as u64,
            })
        }
        }
    };
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

/// A CDR in trouble, for `cdrmunch status`: its `cdr_queue_error` row and queue state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorReport {
    pub id_cdr_queue: u64,
    #[serde(serialize_with = "uuid_text")]
    pub uuid: [u8; 16],
    pub done: String,
    pub retry: u32,
    pub critical: bool,
    pub last_error: String,
    pub description: String,
}

/// A failed task, for `cdrmunch status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskErrorReport {
    pub id: u64,
    pub task_type: String,
    #[serde(serialize_with = "uuid_text")]
    pub uuid: [u8; 16],
    pub retry: u32,
    pub error_message: String,
}

fn uuid_text<S: serde::Serializer>(u: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&uuid::Uuid::from_bytes(*u).to_string())
}

/// Which CDRs `cdrmunch retry` puts back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryCdrs {
    One(u64),
    Errors,
}

/// Which tasks `cdrmunch retry` puts back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryTasks {
    One(u64),
    Errors { task_type: Option<String> },
}

/// A normalized CDR old enough to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeCandidate {
    pub id: u64,
    pub uuid: [u8; 16],
    pub path: String,
}

/// What a replay changed in one CDR's task rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: u64,
    pub repointed: u64,
    pub dropped: u64,
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

    /// The operator commands' queries (`cdrmunch status | retry | purge | replay`).
    fn operations(&self) -> &dyn Operations;
}

/// Queries behind the operator commands. Its own trait so both engines share one
/// implementation (`operator_methods!`).
#[async_trait]
pub trait Operations: Send + Sync {
    /// `cdr_queue` rows received before `created_before` (epoch) and still not done.
    async fn stuck_cdrs(&self, created_before: i64) -> StoreResult<u64>;
    /// CDRs not done whose last attempt failed, newest first.
    async fn recent_errors(&self, limit: u32) -> StoreResult<Vec<ErrorReport>>;
    /// Tasks with `done='error'`, newest first.
    async fn recent_task_errors(&self, limit: u32) -> StoreResult<Vec<TaskErrorReport>>;
    /// Back to `done='n'`, `retry=0`, due now. A CDR already done is left alone.
    async fn retry_cdrs(&self, which: &RetryCdrs) -> StoreResult<u64>;
    /// Back to `done='n'`, `retry=0`, due at `now` (an explicit id even when done: a resend).
    async fn retry_tasks(&self, which: &RetryTasks, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Normalized CDRs created before `created_before` with no task still pending, by id.
    async fn purge_candidates(
        &self,
        created_before: DateTime<Utc>,
        after_id: u64,
        limit: u32,
    ) -> StoreResult<Vec<PurgeCandidate>>;
    /// Deletes normalized CDRs and their tasks, in one transaction. `cdr_queue` rows stay:
    /// they are how intake recognises an old CDR posted again.
    async fn delete_normalized(&self, ids: &[u64]) -> StoreResult<u64>;
    /// Done `cdr_queue` rows received in `[from, to)` (epoch), by id, after `after_id`.
    async fn replay_candidates(&self, from: i64, to: i64, after_id: u64, limit: u32) -> StoreResult<Vec<QueuedCdr>>;
    /// The normalized row of a call: `(id, path)`.
    async fn normalized_of(&self, uuid: [u8; 16]) -> StoreResult<Option<(u64, String)>>;
    /// A re-normalized CDR: its row updated and its task rows reconciled by type in one
    /// transaction — kept (re-pointed to the new node_index), added when new, dropped when
    /// no longer derived and not yet run. Run twice, the second run changes nothing.
    async fn renormalized(
        &self,
        normalized_id: u64,
        row: &NewNormalizedCdr,
        now: DateTime<Utc>,
    ) -> StoreResult<Reconciled>;
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

/// How a replay's task list meets the rows already there, matched by task type.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ReconcilePlan {
    /// `(task id, new node_index)` of rows whose node moved.
    pub repoint: Vec<(i64, i64)>,
    /// Pending rows whose type the rules no longer derive.
    pub drop: Vec<i64>,
    /// `(task_type, node_index)` of types with no row yet.
    pub add: Vec<(String, i64)>,
}

/// `existing` is `(id, task_type, done, node_index)`; a finished row whose type is no longer
/// derived stays as the record of what ran.
pub(crate) fn plan_reconcile(existing: &[(i64, String, String, i64)], wanted: &[(String, u32)]) -> ReconcilePlan {
    let mut plan = ReconcilePlan::default();
    for (id, ty, done, idx) in existing {
        match wanted.iter().find(|(w, _)| w == ty) {
            Some((_, new_idx)) if *new_idx as i64 != *idx => plan.repoint.push((*id, *new_idx as i64)),
            Some(_) => {}
            None if done == "n" => plan.drop.push(*id),
            None => {}
        }
    }
    for (ty, idx) in wanted {
        if !existing.iter().any(|(_, t, _, _)| t == ty) {
            plan.add.push((ty.clone(), *idx as i64));
        }
    }
    plan
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
    fn a_replay_keeps_rows_by_type_adds_new_types_and_drops_unrun_ones() {
        let existing = vec![
            (1, "billing".to_string(), "y".to_string(), 0),
            (2, "calllog".to_string(), "n".to_string(), 1),
            (3, "recordingDelivery".to_string(), "n".to_string(), 2),
            (4, "CDR2SFAPI".to_string(), "error".to_string(), 3),
        ];
        let wanted = vec![("billing".to_string(), 0), ("transcription".to_string(), 1), ("calllog".to_string(), 2)];
        let plan = plan_reconcile(&existing, &wanted);
        assert_eq!(plan.repoint, vec![(2, 2)]);
        assert_eq!(plan.drop, vec![3], "a finished row stays even when no longer derived");
        assert_eq!(plan.add, vec![("transcription".to_string(), 1)]);
        let again: Vec<_> = vec![
            (1, "billing".to_string(), "y".to_string(), 0),
            (5, "transcription".to_string(), "n".to_string(), 1),
            (2, "calllog".to_string(), "n".to_string(), 2),
        ];
        assert_eq!(plan_reconcile(&again, &wanted), ReconcilePlan::default(), "a second replay changes nothing");
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
