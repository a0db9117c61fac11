//! `normalized_cdrs` and the task rows born with them: the distilleries' batch commit.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::AnyConnection;
use sqlx::{Any, QueryBuilder, Row};

use super::columns::{push_ids, push_uuids, sql_time, uuid_bytes, RowState, MAX_ROWS_PER_STATEMENT};
use super::{Store, StoreResult, Time};
use crate::domain::tasks::TaskType;

/// What the distillery commits for one CDR, in one transaction.
#[derive(Debug, Clone)]
pub struct NewNormalizedCdr {
    pub uuid: [u8; 16],
    pub path: String,
    pub cdr_path: String,
    pub table_suffix: i64,
    pub org_id: i64,
    /// `(task_type, node_index)` for each `<task>` node that was kept.
    pub tasks: Vec<(TaskType, u32)>,
    /// What the leg contributes to its call (None: not linked, as for rows from tests).
    pub links: Option<crate::domain::calls::LegFacts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitResult {
    Committed {
        normalized_id: u64,
    },
    /// The call uuid was normalized before: the queue row is marked done, nothing else.
    Duplicate,
}

#[async_trait]
pub trait NormalizedCdrs: Send + Sync {
    /// For each `(cdr_queue.id, record)`: inserts `normalized_cdrs` and its tasks and sets
    /// `done='y'` — the whole batch in one transaction. A uuid normalized before is a
    /// `Duplicate` (its queue row is still marked done); the others are unaffected by it.
    async fn commit_normalized(&self, batch: &[(u64, NewNormalizedCdr)], now: Time) -> StoreResult<Vec<CommitResult>>;
}

#[async_trait]
impl NormalizedCdrs for Store {
    async fn commit_normalized(&self, batch: &[(u64, NewNormalizedCdr)], now: Time) -> StoreResult<Vec<CommitResult>> {
        // A fixed number of statements per batch, whatever its size: each is a round trip.
        self.write(|mut tx| async move {
            let existing =
                uuids_in(&mut tx, "SELECT uuid FROM normalized_cdrs WHERE uuid IN ", batch.iter().map(|b| b.1.uuid))
                    .await?
                    .iter()
                    .map(|r| uuid_bytes(&r.get::<Vec<u8>, _>(0)))
                    .collect::<Vec<_>>();
            let plan = plan_commit(batch, &existing);
            let mut ids: HashMap<[u8; 16], u64> = HashMap::new();
            if !plan.fresh.is_empty() {
                let fresh: Vec<&NewNormalizedCdr> = plan.fresh.iter().map(|&i| &batch[i].1).collect();
                let mut qb =
                    QueryBuilder::new("INSERT INTO normalized_cdrs (uuid, path, cdr_path, TableSuffix, rmOrgID) ");
                qb.push_values(&fresh, |mut b, c| {
                    b.push_bind(c.uuid.to_vec())
                        .push_bind(c.path.clone())
                        .push_bind(c.cdr_path.clone())
                        .push_bind(c.table_suffix)
                        .push_bind(c.org_id);
                });
                qb.build().execute(&mut *tx).await?;
                let head = "SELECT CAST(id AS SIGNED), uuid FROM normalized_cdrs WHERE uuid IN ";
                ids = uuids_in(&mut tx, head, fresh.iter().map(|c| c.uuid))
                    .await?
                    .iter()
                    .map(|r| (uuid_bytes(&r.get::<Vec<u8>, _>(1)), r.get::<i64, _>(0) as u64))
                    .collect();
                let t = sql_time(now);
                for chunk in plan.task_rows(batch, &ids).chunks(MAX_ROWS_PER_STATEMENT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO tasks (id_normalized_cdrs, task_type, create_time, next_attempt, node_index) ",
                    );
                    qb.push_values(chunk, |mut b, (nid, ty, idx)| {
                        b.push_bind(*nid as i64)
                            .push_bind(*ty)
                            .push_bind(t.clone())
                            .push_bind(t.clone())
                            .push_bind(*idx as i64);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
            }
            let legs: Vec<_> = plan.fresh.iter().filter_map(|&i| batch[i].1.links.clone()).collect();
            self.link_calls(&mut tx, &legs, now).await?;
            // no lease time left on a done row: `done='n'` by hand makes it due at once
            let mut qb = QueryBuilder::new("UPDATE cdr_queue SET next_attempt = NULL, done = ");
            qb.push_bind(RowState::Done).push(" WHERE id IN ");
            push_ids(&mut qb, batch.iter().map(|b| b.0));
            qb.build().execute(&mut *tx).await?;
            Ok((plan.results(batch, &ids), tx))
        })
        .await
    }
}

/// Rows of `head (?, ?, …)` with one bound uuid each.
async fn uuids_in(
    conn: &mut AnyConnection,
    head: &'static str,
    uuids: impl Iterator<Item = [u8; 16]>,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut qb: QueryBuilder<Any> = QueryBuilder::new(head);
    push_uuids(&mut qb, uuids);
    qb.build().fetch_all(&mut *conn).await
}

/// Which rows of a commit batch are new: a uuid normalized before, or repeated within the
/// batch, is a duplicate (its queue row is still marked done).
pub(crate) struct CommitPlan {
    /// Indexes into the batch of the rows to insert.
    pub fresh: Vec<usize>,
}

pub(crate) fn plan_commit(batch: &[(u64, NewNormalizedCdr)], existing: &[[u8; 16]]) -> CommitPlan {
    let mut seen: HashSet<[u8; 16]> = existing.iter().copied().collect();
    CommitPlan { fresh: (0..batch.len()).filter(|&i| seen.insert(batch[i].1.uuid)).collect() }
}

impl CommitPlan {
    /// `(normalized id, task type, node_index)` for every task of the inserted rows.
    pub fn task_rows(
        &self,
        batch: &[(u64, NewNormalizedCdr)],
        ids: &HashMap<[u8; 16], u64>,
    ) -> Vec<(u64, TaskType, u32)> {
        self.fresh
            .iter()
            .filter_map(|&i| ids.get(&batch[i].1.uuid).map(|id| (*id, &batch[i].1)))
            .flat_map(|(id, c)| c.tasks.iter().map(move |(ty, idx)| (id, *ty, *idx)))
            .collect()
    }

    pub fn results(&self, batch: &[(u64, NewNormalizedCdr)], ids: &HashMap<[u8; 16], u64>) -> Vec<CommitResult> {
        let fresh: HashSet<usize> = self.fresh.iter().copied().collect();
        (0..batch.len())
            .map(|i| match ids.get(&batch[i].1.uuid) {
                Some(id) if fresh.contains(&i) => CommitResult::Committed { normalized_id: *id },
                _ => CommitResult::Duplicate,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(uuid: u8, tasks: &[TaskType]) -> NewNormalizedCdr {
        NewNormalizedCdr {
            uuid: [uuid; 16],
            path: String::new(),
            cdr_path: String::new(),
            table_suffix: 0,
            org_id: 0,
            tasks: tasks.iter().enumerate().map(|(i, t)| (*t, i as u32)).collect(),
            links: None,
        }
    }

    #[test]
    fn a_commit_plan_skips_known_and_repeated_uuids() {
        use TaskType::{Billing, Calllog};
        let batch =
            vec![(10, row(1, &[Billing, Calllog])), (11, row(2, &[Calllog])), (12, row(1, &[])), (13, row(3, &[]))];
        let plan = plan_commit(&batch, &[[2; 16]]);
        assert_eq!(plan.fresh, vec![0, 3]);
        let ids = HashMap::from([([1; 16], 100), ([3; 16], 101)]);
        assert_eq!(plan.task_rows(&batch, &ids), vec![(100, Billing, 0), (100, Calllog, 1)]);
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
