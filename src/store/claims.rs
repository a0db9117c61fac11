//! Who holds a claim. A claim records, beside its lease (`next_attempt`), the instance that
//! made it (stable across restarts of one deployment), that instance's boot (fresh per
//! start) and a claim number of that boot. So a restarted process takes its previous
//! boot's claims back at once instead of waiting for their leases, leases are renewed only
//! for claims the renewing boot still holds, and a task attempt finishes only while its
//! own claim holds (a later claim of the same row by the same boot has another number).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::QueryBuilder;

use super::columns::{push_ids, sql_time, MAX_ROWS_PER_STATEMENT};
use super::{Store, StoreResult, Time};

/// `SET` fragment that forgets a row's claim: a row given back, retried later or made due
/// again is no one's to renew, to finish, or to take back.
pub(super) const NO_CLAIM: &str = "claimed_by = NULL, claim_boot = NULL, claim_seq = NULL";

/// This process incarnation, as its claims record it.
#[derive(Debug)]
pub struct Claimant {
    /// `app.instance_id`: the same after a restart of the same deployment.
    pub instance: String,
    /// Fresh per start (uuid v4).
    pub boot: String,
    seq: AtomicU64,
}

impl Claimant {
    pub fn new(instance: &str) -> Claimant {
        Claimant { instance: instance.to_string(), boot: uuid::Uuid::new_v4().to_string(), seq: AtomicU64::new(0) }
    }

    /// A new claim number of this boot.
    pub(super) fn next_claim(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Claims a previous boot of this instance held, taken back at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TakenBack {
    pub cdrs: u64,
    pub tasks: u64,
}

impl Store {
    /// The same database, its claims made as `claimant`.
    pub fn claiming_as(mut self, claimant: Claimant) -> Store {
        self.claimant = Arc::new(claimant);
        self
    }

    pub fn claimant(&self) -> &Claimant {
        &self.claimant
    }

    /// Moves `next_attempt` of just-selected rows to the end of their lease, recording the
    /// claim. Returns the claim number.
    pub(super) async fn lease(
        &self,
        tx: &mut sqlx::AnyConnection,
        table: &'static str,
        until: Time,
        ids: impl ExactSizeIterator<Item = u64>,
    ) -> Result<u64, sqlx::Error> {
        let claim = self.claimant.next_claim();
        if ids.len() > 0 {
            let mut qb = QueryBuilder::new(format!("UPDATE {table} SET next_attempt = "));
            qb.push_bind(sql_time(until))
                .push(", claimed_by = ")
                .push_bind(self.claimant.instance.clone())
                .push(", claim_boot = ")
                .push_bind(self.claimant.boot.clone())
                .push(", claim_seq = ")
                .push_bind(claim as i64)
                .push(" WHERE id IN ");
            push_ids(&mut qb, ids);
            qb.build().execute(&mut *tx).await?;
        }
        Ok(claim)
    }

    /// Extends to `until` the leases of the rows among `ids` this boot still holds (not
    /// finished, given back, made due again, or claimed by anyone else since). Returns how
    /// many it extended.
    pub(super) async fn renew(&self, table: &'static str, ids: &[u64], until: Time) -> StoreResult<u64> {
        let mut renewed = 0;
        for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
            renewed += self
                .write_one(|mut conn| async move {
                    let mut qb = QueryBuilder::new(format!("UPDATE {table} SET next_attempt = "));
                    qb.push_bind(sql_time(until))
                        .push(" WHERE done = 'n' AND claim_boot = ")
                        .push_bind(self.claimant.boot.clone())
                        .push(" AND id IN ");
                    push_ids(&mut qb, chunk.iter().copied());
                    let n = qb.build().execute(&mut *conn).await?.rows_affected();
                    Ok((n, conn))
                })
                .await?;
        }
        Ok(renewed)
    }

    /// At start: the claims this instance's previous boots still hold (it was killed) are
    /// due now, rather than when their leases would end. `cdrs` / `tasks` say which tables
    /// this process works on; claims of other instances are left to their leases.
    pub async fn take_back_claims(&self, cdrs: bool, tasks: bool, now: Time) -> StoreResult<TakenBack> {
        let mut taken = TakenBack::default();
        for (table, due, wanted) in [("cdr_queue", None, cdrs), ("tasks", Some(sql_time(now)), tasks)] {
            if !wanted {
                continue;
            }
            let sql = format!(
                "UPDATE {table} SET next_attempt = ?, {NO_CLAIM} WHERE done = 'n' AND claimed_by = ? AND claim_boot <> ?"
            );
            let (sql, due) = (sql.as_str(), &due);
            let n = self
                .write_one(|mut conn| async move {
                    let n = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(due.clone())
                        .bind(self.claimant.instance.clone())
                        .bind(self.claimant.boot.clone())
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    Ok((n, conn))
                })
                .await?;
            match table {
                "cdr_queue" => taken.cdrs = n,
                _ => taken.tasks = n,
            }
        }
        Ok(taken)
    }
}
