//! `tasks`: tasksd's claims (leases) per task type and what each attempt ended as; and
//! `call_log`, the calllog task's sink in the same database.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row};

use super::columns::{count, cut, id, parse_sql_time, push_ids, push_uuids, sql_time, uuid, RowState};
use super::nodes::Claimable;
use super::{Store, StoreResult, Time};
use crate::domain::tasks::TaskType;

/// A claimed `tasks` row, joined to its normalized CDR so the executor can find the
/// `<task>` node at `node_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTask {
    pub id: u64,
    pub id_normalized_cdrs: u64,
    pub task_type: TaskType,
    pub node_index: u32,
    /// Failures so far.
    pub retry: u32,
    pub create_time: DateTime<Utc>,
    pub uuid: [u8; 16],
    /// `normalized_cdrs.path`: where the normalized XML is.
    pub ncdr_path: String,
    /// `normalized_cdrs.cdr_path`: where the raw CDR is.
    pub cdr_path: String,
    /// The lease the claim set (renewals extend it in the row, not here).
    pub leased_until: DateTime<Utc>,
    /// The claim's number in this boot: an attempt finishes only while it still holds.
    pub claim: u64,
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

#[async_trait]
pub trait TaskQueue: Send + Sync {
    /// Claims up to `limit` due tasks of one type (`done='n'`, `next_attempt <= now`, via
    /// `idx_type_done_next`) by moving `next_attempt` to `lease_until`.
    async fn claim_tasks(&self, task: TaskType, now: Time, until: Time, limit: u32) -> StoreResult<Vec<ClaimedTask>>;

    /// Extends to `until` the leases of the claimed tasks among `ids` this boot still
    /// holds, so a long attempt keeps a short lease. Returns how many.
    async fn renew_tasks(&self, ids: &[u64], until: Time) -> StoreResult<u64>;

    /// Records an attempt's end, only while its claim holds: the row still `done='n'` and
    /// still claimed by this boot's claim number `claim` (renewals keep it; an expired lease
    /// claimed again, or a task made due again, does not). So a late duplicate attempt
    /// cannot undo a finished one, and a task made due again while it ran (a late leg
    /// changed its call) runs again. A finished or failed row's `next_attempt` becomes the
    /// time it finished, so setting it back to `done='n'` by hand makes it due at once; a
    /// retried one is no one's claim until claimed again. Returns whether the row changed.
    async fn finish_task(&self, task_id: u64, claim: u64, finish: &TaskFinish) -> StoreResult<bool>;

    /// Gives claimed, unstarted tasks back (shutdown): due at `now`.
    async fn release_tasks(&self, ids: &[u64], now: Time) -> StoreResult<()>;
}

#[async_trait]
impl TaskQueue for Store {
    async fn claim_tasks(&self, task: TaskType, now: Time, until: Time, limit: u32) -> StoreResult<Vec<ClaimedTask>> {
        let shard = match self.shard.tasks() {
            Claimable::Nothing => return Ok(Vec::new()),
            Claimable::Every => String::new(),
            Claimable::Only(condition) => condition,
        };
        // MariaDB has no `FOR UPDATE OF`: lock the task rows alone, then read their CDRs.
        let select = format!(
            "SELECT CAST(id AS SIGNED), CAST(id_normalized_cdrs AS SIGNED), task_type, CAST(node_index AS SIGNED), \
             CAST(retry AS SIGNED), CAST(create_time AS CHAR) FROM tasks \
             WHERE task_type = ? AND done = 'n' AND next_attempt <= ?{shard} ORDER BY next_attempt, id LIMIT ?{}",
            self.dialect.skip_locked()
        );
        let select = select.as_str();
        self.write(|mut tx| async move {
            let heads = sqlx::query(sqlx::AssertSqlSafe(select))
                .bind(task)
                .bind(sql_time(now))
                .bind(limit as i64)
                .fetch_all(&mut *tx)
                .await?;
            if heads.is_empty() {
                return Ok((Vec::new(), tx));
            }
            let mut qb = QueryBuilder::new(
                "SELECT CAST(id AS SIGNED), uuid, path, COALESCE(cdr_path, '') FROM normalized_cdrs WHERE id IN ",
            );
            push_ids(&mut qb, heads.iter().map(|h| id(h, 1)));
            let cdrs: HashMap<u64, ([u8; 16], String, String)> = qb
                .build()
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| (id(r, 0), (uuid(r, 1), r.get(2), r.get(3))))
                .collect();
            let mut claimed = Vec::with_capacity(heads.len());
            for h in &heads {
                let nid = id(h, 1);
                let Some((uuid, ncdr_path, cdr_path)) = cdrs.get(&nid).cloned() else { continue };
                let (task_type, create_time) = (h.get(2), parse_sql_time(&h.get::<String, _>(5)));
                let (node_index, retry) = (count(h, 3), count(h, 4));
                claimed.push(ClaimedTask {
                    id: id(h, 0),
                    id_normalized_cdrs: nid,
                    task_type,
                    node_index,
                    retry,
                    create_time,
                    uuid,
                    ncdr_path,
                    cdr_path,
                    leased_until: until,
                    claim: 0,
                });
            }
            claimed.sort_by_key(|t| t.id);
            let claim = self.lease(&mut tx, "tasks", until, claimed.iter().map(|t| t.id)).await?;
            claimed.iter_mut().for_each(|t| t.claim = claim);
            Ok((claimed, tx))
        })
        .await
    }

    async fn renew_tasks(&self, ids: &[u64], until: Time) -> StoreResult<u64> {
        self.renew("tasks", ids, until).await
    }

    async fn finish_task(&self, task_id: u64, claim: u64, finish: &TaskFinish) -> StoreResult<bool> {
        let id = task_id as i64;
        // A finished row keeps no lease time ahead: the runbook's `UPDATE tasks SET
        // done='n', retry=0 WHERE id=…` must make it due at the next poll, not when the
        // lease would have ended.
        let finished_at = &sql_time(Utc::now());
        let boot = &self.claimant().boot;
        self.write_one(|mut conn| async move {
            let q = match finish {
                TaskFinish::Done => sqlx::query(
                    "UPDATE tasks SET done = ?, next_attempt = ? \
                     WHERE id = ? AND done = 'n' AND claim_boot = ? AND claim_seq = ?",
                )
                .bind(RowState::Done)
                .bind(finished_at.clone()),
                TaskFinish::Retry { next_attempt, error } => sqlx::query(
                    "UPDATE tasks SET retry = retry + 1, next_attempt = ?, error_message = ?, claimed_by = NULL, \
                     claim_boot = NULL, claim_seq = NULL WHERE id = ? AND done = 'n' AND claim_boot = ? AND claim_seq = ?",
                )
                .bind(sql_time(*next_attempt))
                .bind(error.clone()),
                TaskFinish::Error { error } => sqlx::query(
                    "UPDATE tasks SET done = ?, next_attempt = ?, error_message = ? \
                     WHERE id = ? AND done = 'n' AND claim_boot = ? AND claim_seq = ?",
                )
                .bind(RowState::Error)
                .bind(finished_at.clone())
                .bind(error.clone()),
            };
            let q = q.bind(id).bind(boot.clone()).bind(claim as i64);
            let changed = q.execute(&mut *conn).await?.rows_affected() > 0;
            Ok((changed, conn))
        })
        .await
    }

    async fn release_tasks(&self, ids: &[u64], now: Time) -> StoreResult<()> {
        self.release("tasks", Some(now), ids).await
    }
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

impl Store {
    /// Writes a call's `call_log` row, replacing the one it had, and drops the rows of
    /// `superseded` (the call's other legs: a run that read the call before a late leg
    /// changed its call id may have written one).
    pub async fn upsert_call_log(&self, e: &CallLogEntry, superseded: &[[u8; 16]]) -> StoreResult<()> {
        let columns: Vec<&str> = "rmOrgID, TableSuffix, direction, caller_id_number, destination_number, start_epoch, \
             answer_epoch, end_epoch, duration, billsec, hangup_cause, recording_path"
            .split(", ")
            .collect();
        let sql = format!(
            "INSERT INTO call_log (uuid, {}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){}",
            columns.join(", "),
            self.dialect.upsert("uuid", &columns)
        );
        let sql = sql.as_str();
        self.write(|mut tx| async move {
            if !superseded.is_empty() {
                let mut qb = QueryBuilder::new("DELETE FROM call_log WHERE uuid IN ");
                push_uuids(&mut qb, superseded.iter().copied());
                qb.build().execute(&mut *tx).await?;
            }
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(e.uuid.to_vec())
                .bind(e.org_id)
                .bind(e.table_suffix)
                .bind(cut(&e.direction, 16))
                .bind(cut(&e.caller_id_number, 255))
                .bind(cut(&e.destination_number, 255))
                .bind(e.start_epoch)
                .bind(e.answer_epoch)
                .bind(e.end_epoch)
                .bind(e.duration)
                .bind(e.billsec)
                .bind(cut(&e.hangup_cause, 64))
                .bind(e.recording_path.clone())
                .execute(&mut *tx)
                .await?;
            Ok(((), tx))
        })
        .await
    }

    /// `(task_type, done, count)` for the metrics gauges; served by `idx_type_done_next`.
    pub async fn task_counts(&self) -> StoreResult<Vec<(TaskType, RowState, u64)>> {
        let rows = sqlx::query("SELECT task_type, CAST(done AS CHAR), COUNT(*) FROM tasks GROUP BY task_type, done")
            .fetch_all(&self.pool)
            .await?;
        // a type this build does not know (a row from a newer version) is left out
        Ok(rows.iter().filter_map(|r| Some((r.try_get(0).ok()?, r.get(1), r.get::<i64, _>(2) as u64))).collect())
    }
}
