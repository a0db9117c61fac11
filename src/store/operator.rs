//! What operators ask of the database: the seed's health checks (`cdrmunch status`), putting
//! failed work back (`retry`), `purge` and `replay`, and a call's rows as they stand.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, QueryBuilder, Row};

use super::columns::{count, id, push_ids, sql_time, uuid, RowState};
use super::queue::QueuedCdr;
use super::{NewNormalizedCdr, Store, StoreResult, Time};
use crate::domain::tasks::TaskType;

/// A CDR in trouble, for `cdrmunch status`: its `cdr_queue_error` row and queue state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorReport {
    pub id_cdr_queue: u64,
    #[serde(serialize_with = "uuid_text")]
    pub uuid: [u8; 16],
    pub done: RowState,
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

/// Every `cdr_queue_error` row joined to its queue row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueError {
    pub id_cdr_queue: u64,
    pub uuid: [u8; 16],
    pub done: RowState,
    pub description: String,
    pub critical: bool,
    pub crashes: u32,
}

/// A `tasks` row as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub id: u64,
    pub task_type: TaskType,
    pub node_index: u32,
    pub done: RowState,
    pub retry: u32,
    pub error_message: Option<String>,
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
    Errors { task_type: Option<TaskType> },
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

impl ErrorReport {
    fn from_row(r: &AnyRow) -> ErrorReport {
        let (done, critical) = (r.get(2), r.get::<String, _>(4) == "y");
        let (last_error, description) = (r.get::<Option<String>, _>(5).unwrap_or_default(), r.get(6));
        ErrorReport {
            id_cdr_queue: id(r, 0),
            uuid: uuid(r, 1),
            done,
            retry: count(r, 3),
            critical,
            last_error,
            description,
        }
    }
}

impl TaskErrorReport {
    fn from_row(r: &AnyRow) -> TaskErrorReport {
        let (task_type, error_message) = (r.get(1), r.get(4));
        TaskErrorReport { id: id(r, 0), task_type, uuid: uuid(r, 2), retry: count(r, 3), error_message }
    }
}

impl QueueError {
    fn from_row(r: &AnyRow) -> QueueError {
        let (done, description, critical) = (r.get(2), r.get(3), r.get::<String, _>(4) == "y");
        QueueError { id_cdr_queue: id(r, 0), uuid: uuid(r, 1), done, description, critical, crashes: count(r, 5) }
    }
}

impl TaskState {
    fn from_row(r: &AnyRow) -> TaskState {
        let (task_type, done, error_message) = (r.get(1), r.get(3), r.get(5));
        TaskState { id: id(r, 0), task_type, node_index: count(r, 2), done, retry: count(r, 4), error_message }
    }
}

type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments>;

impl Store {
    /// The rows of a read, each made a `T`.
    async fn rows<T>(&self, query: Query<'_>, each: fn(&AnyRow) -> T) -> StoreResult<Vec<T>> {
        Ok(query.fetch_all(&self.pool).await?.iter().map(each).collect())
    }

    /// `cdr_queue` rows received before `created_before` (epoch) and still not done.
    pub async fn stuck_cdrs(&self, created_before: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cdr_queue WHERE done = 'n' AND create_time < ?")
            .bind(created_before)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// CDRs not done whose last attempt failed, newest first.
    pub async fn recent_errors(&self, limit: u32) -> StoreResult<Vec<ErrorReport>> {
        let query = sqlx::query(
            "SELECT CAST(e.id_cdr_queue AS SIGNED), q.uuid, CAST(q.done AS CHAR), CAST(q.retry AS SIGNED), \
             CAST(e.critical AS CHAR), CAST(e.last_error_date AS CHAR), COALESCE(e.description, '') \
             FROM cdr_queue_error e JOIN cdr_queue q ON q.id = e.id_cdr_queue WHERE q.done <> 'y' \
             ORDER BY e.last_error_date DESC, e.id DESC LIMIT ?",
        );
        self.rows(query.bind(limit as i64), ErrorReport::from_row).await
    }

    /// Tasks with `done='error'`, newest first.
    pub async fn recent_task_errors(&self, limit: u32) -> StoreResult<Vec<TaskErrorReport>> {
        let query = sqlx::query(
            "SELECT CAST(t.id AS SIGNED), t.task_type, n.uuid, CAST(t.retry AS SIGNED), \
             COALESCE(t.error_message, '') FROM tasks t JOIN normalized_cdrs n ON n.id = t.id_normalized_cdrs \
             WHERE t.done = 'error' ORDER BY t.id DESC LIMIT ?",
        );
        self.rows(query.bind(limit as i64), TaskErrorReport::from_row).await
    }

    /// Back to `done='n'`, `retry=0`, due now. A CDR already done is left alone.
    pub async fn retry_cdrs(&self, which: &RetryCdrs) -> StoreResult<u64> {
        let q = match which {
            RetryCdrs::One(id) => sqlx::query(
                "UPDATE cdr_queue SET done = 'n', retry = 0, next_attempt = NULL, \
                 claimed_by = NULL, claim_boot = NULL, claim_seq = NULL WHERE id = ? AND done <> 'y'",
            )
            .bind(*id as i64),
            RetryCdrs::Errors => sqlx::query(
                "UPDATE cdr_queue SET done = 'n', retry = 0, next_attempt = NULL, \
                 claimed_by = NULL, claim_boot = NULL, claim_seq = NULL WHERE done = 'error'",
            ),
        };
        Ok(q.execute(&self.pool).await?.rows_affected())
    }

    /// Back to `done='n'`, `retry=0`, due at `now` (an explicit id even when done: a resend).
    pub async fn retry_tasks(&self, which: &RetryTasks, now: Time) -> StoreResult<u64> {
        let t = sql_time(now);
        let q = match which {
            RetryTasks::One(id) => sqlx::query(
                "UPDATE tasks SET done = 'n', retry = 0, next_attempt = ?, \
                 claimed_by = NULL, claim_boot = NULL, claim_seq = NULL WHERE id = ?",
            )
            .bind(t)
            .bind(*id as i64),
            RetryTasks::Errors { task_type: None } => sqlx::query(
                "UPDATE tasks SET done = 'n', retry = 0, next_attempt = ?, \
                 claimed_by = NULL, claim_boot = NULL, claim_seq = NULL WHERE done = 'error'",
            )
            .bind(t),
            RetryTasks::Errors { task_type: Some(ty) } => sqlx::query(
                "UPDATE tasks SET done = 'n', retry = 0, next_attempt = ?, \
                 claimed_by = NULL, claim_boot = NULL, claim_seq = NULL WHERE done = 'error' AND task_type = ?",
            )
            .bind(t)
            .bind(*ty),
        };
        Ok(q.execute(&self.pool).await?.rows_affected())
    }

    /// Normalized CDRs created before `created_before` with no task still pending, by id.
    pub async fn purge_candidates(
        &self,
        created_before: Time,
        after_id: u64,
        limit: u32,
    ) -> StoreResult<Vec<PurgeCandidate>> {
        let query = sqlx::query(
            "SELECT CAST(n.id AS SIGNED), n.uuid, n.path FROM normalized_cdrs n \
             WHERE n.created_at < ? AND n.id > ? AND NOT EXISTS \
             (SELECT 1 FROM tasks t WHERE t.id_normalized_cdrs = n.id AND t.done = 'n') \
             ORDER BY n.id LIMIT ?",
        );
        let query = query.bind(sql_time(created_before)).bind(after_id as i64).bind(limit as i64);
        self.rows(query, |r| PurgeCandidate { id: id(r, 0), uuid: uuid(r, 1), path: r.get(2) }).await
    }

    /// Deletes normalized CDRs, their tasks and their legs (a call none of whose legs is left
    /// goes too), in one transaction. `cdr_queue` rows stay: they are how intake recognises
    /// an old CDR posted again; `call_log` rows stay: they are the product.
    pub async fn delete_normalized(&self, purged: &[PurgeCandidate]) -> StoreResult<u64> {
        if purged.is_empty() {
            return Ok(0);
        }
        self.write(|mut tx| async move {
            let mut deleted = 0;
            for head in ["DELETE FROM tasks WHERE id_normalized_cdrs IN ", "DELETE FROM normalized_cdrs WHERE id IN "] {
                let mut qb = QueryBuilder::new(head);
                push_ids(&mut qb, purged.iter().map(|c| c.id));
                deleted = qb.build().execute(&mut *tx).await?.rows_affected();
            }
            self.unlink_calls(&mut tx, purged.iter().map(|c| c.uuid)).await?;
            Ok((deleted, tx))
        })
        .await
    }

    /// Done `cdr_queue` rows received in `[from, to)` (epoch), by id, after `after_id`.
    pub async fn replay_candidates(
        &self,
        from: i64,
        to: i64,
        after_id: u64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedCdr>> {
        let sql = format!(
            "SELECT {} FROM cdr_queue WHERE done = 'y' AND create_time >= ? AND create_time < ? \
             AND id > ? ORDER BY id LIMIT ?",
            QueuedCdr::columns("")
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(from).bind(to).bind(after_id as i64);
        self.rows(query.bind(limit as i64), QueuedCdr::from_row).await
    }

    /// Billed calls received in `[from, to)` (epoch), of one org when given, by queue id after
    /// `after_id`: each queue row with the path of its normalized CDR.
    pub async fn rerate_candidates(
        &self,
        from: i64,
        to: i64,
        org: Option<i64>,
        after_id: u64,
        limit: u32,
    ) -> StoreResult<Vec<(QueuedCdr, String)>> {
        let sql = format!(
            "SELECT {}, n.path FROM cdr_queue q JOIN normalized_cdrs n ON n.uuid = q.uuid \
             WHERE q.done = 'y' AND q.create_time >= ? AND q.create_time < ? AND q.id > ? \
             AND (? = 0 OR n.rmOrgID = ?) AND EXISTS (SELECT 1 FROM tasks t WHERE t.id_normalized_cdrs = n.id \
             AND t.task_type = 'billing' AND t.done = 'y') ORDER BY q.id LIMIT ?",
            QueuedCdr::columns("q.")
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(from).bind(to).bind(after_id as i64);
        let query = query.bind(org.is_some() as i64).bind(org.unwrap_or(0)).bind(limit as i64);
        self.rows(query, |r| (QueuedCdr::from_row(r), r.get(6))).await
    }

    /// The normalized row of a call: `(id, path)`.
    pub async fn normalized_of(&self, uuid: [u8; 16]) -> StoreResult<Option<(u64, String)>> {
        let row = sqlx::query("SELECT CAST(id AS SIGNED), path FROM normalized_cdrs WHERE uuid = ?")
            .bind(uuid.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (id(&r, 0), r.get(1))))
    }

    /// A re-normalized CDR: its row updated and its task rows reconciled by type in one
    /// transaction — kept (re-pointed to the new node_index), added when new, dropped when
    /// no longer derived and not yet run. Run twice, the second run changes nothing.
    pub async fn renormalized(&self, normalized_id: u64, row: &NewNormalizedCdr, now: Time) -> StoreResult<Reconciled> {
        let nid = normalized_id as i64;
        self.write(|mut tx| async move {
            sqlx::query("UPDATE normalized_cdrs SET path = ?, TableSuffix = ?, rmOrgID = ? WHERE id = ?")
                .bind(row.path.clone())
                .bind(row.table_suffix)
                .bind(row.org_id)
                .bind(nid)
                .execute(&mut *tx)
                .await?;
            let existing: Vec<(i64, TaskType, RowState, i64)> = sqlx::query(
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
                sqlx::query("UPDATE tasks SET node_index = ? WHERE id = ?")
                    .bind(*idx)
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
            }
            for id in &plan.drop {
                sqlx::query("DELETE FROM tasks WHERE id = ? AND done = 'n'").bind(*id).execute(&mut *tx).await?;
            }
            if let Some(leg) = &row.links {
                self.link_calls(&mut tx, std::slice::from_ref(leg), now).await?;
            }
            let t = sql_time(now);
            for (ty, idx) in &plan.add {
                sqlx::query(
                    "INSERT INTO tasks (id_normalized_cdrs, task_type, create_time, next_attempt, node_index) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(nid)
                .bind(*ty)
                .bind(t.clone())
                .bind(t.clone())
                .bind(*idx)
                .execute(&mut *tx)
                .await?;
            }
            let reconciled = Reconciled {
                added: plan.add.len() as u64,
                repointed: plan.repoint.len() as u64,
                dropped: plan.drop.len() as u64,
            };
            Ok((reconciled, tx))
        })
        .await
    }

    /// Every `cdr_queue_error` row with its queue state and crash count.
    pub async fn queue_errors(&self) -> StoreResult<Vec<QueueError>> {
        let query = sqlx::query(
            "SELECT CAST(e.id_cdr_queue AS SIGNED), q.uuid, CAST(q.done AS CHAR), COALESCE(e.description, ''), \
             CAST(e.critical AS CHAR), CAST(e.crashes AS SIGNED) FROM cdr_queue_error e \
             JOIN cdr_queue q ON q.id = e.id_cdr_queue ORDER BY e.id_cdr_queue",
        );
        self.rows(query, QueueError::from_row).await
    }

    /// Every task of a normalized uuid with its state, by node_index.
    pub async fn task_states(&self, uuid: [u8; 16]) -> StoreResult<Vec<TaskState>> {
        let query = sqlx::query(
            "SELECT CAST(t.id AS SIGNED), t.task_type, CAST(t.node_index AS SIGNED), CAST(t.done AS CHAR), \
             CAST(t.retry AS SIGNED), t.error_message FROM tasks t \
             JOIN normalized_cdrs n ON n.id = t.id_normalized_cdrs WHERE n.uuid = ? ORDER BY t.node_index",
        );
        self.rows(query.bind(uuid.to_vec()), TaskState::from_row).await
    }

    /// How many normalized CDRs and task rows there are.
    pub async fn normalized_counts(&self) -> StoreResult<(u64, u64)> {
        let r = sqlx::query("SELECT (SELECT COUNT(*) FROM normalized_cdrs), (SELECT COUNT(*) FROM tasks)")
            .fetch_one(&self.pool)
            .await?;
        Ok((id(&r, 0), id(&r, 1)))
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
    pub add: Vec<(TaskType, i64)>,
}

/// `existing` is `(id, task_type, done, node_index)`; a finished row whose type is no longer
/// derived stays as the record of what ran.
pub(crate) fn plan_reconcile(existing: &[(i64, TaskType, RowState, i64)], wanted: &[(TaskType, u32)]) -> ReconcilePlan {
    let mut plan = ReconcilePlan::default();
    for (id, ty, done, idx) in existing {
        match wanted.iter().find(|(w, _)| w == ty) {
            Some((_, new_idx)) if *new_idx as i64 != *idx => plan.repoint.push((*id, *new_idx as i64)),
            Some(_) => {}
            None if *done == RowState::Pending => plan.drop.push(*id),
            None => {}
        }
    }
    for (ty, idx) in wanted {
        if !existing.iter().any(|(_, t, _, _)| t == ty) {
            plan.add.push((*ty, *idx as i64));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use RowState::{Done, Error, Pending};
    use TaskType::{Billing, Calllog, Cdr2SfApi, RecordingDelivery, Transcription};

    #[test]
    fn a_replay_keeps_rows_by_type_adds_new_types_and_drops_unrun_ones() {
        let existing = vec![
            (1, Billing, Done, 0),
            (2, Calllog, Pending, 1),
            (3, RecordingDelivery, Pending, 2),
            (4, Cdr2SfApi, Error, 3),
        ];
        let wanted = vec![(Billing, 0), (Transcription, 1), (Calllog, 2)];
        let plan = plan_reconcile(&existing, &wanted);
        assert_eq!(plan.repoint, vec![(2, 2)]);
        assert_eq!(plan.drop, vec![3], "a finished row stays even when no longer derived");
        assert_eq!(plan.add, vec![(Transcription, 1)]);
        let again = vec![(1, Billing, Done, 0), (5, Transcription, Pending, 1), (2, Calllog, Pending, 2)];
        assert_eq!(plan_reconcile(&again, &wanted), ReconcilePlan::default(), "a second replay changes nothing");
    }
}
