//! `cdr_queue` and `cdr_queue_error`: intake's rows, the distilleries' claims (leases), and
//! what each claim ended as.

use async_trait::async_trait;
use sqlx::{QueryBuilder, Row};

use sqlx::any::AnyRow;

use super::claims::NO_CLAIM;
use super::columns::{count, id, push_ids, sql_time, uuid, RowState, MAX_ROWS_PER_STATEMENT};
use super::nodes::Claimable;
use super::{Store, StoreResult, Time};

/// A new `cdr_queue` row, written by intake once the raw CDR is durable on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl QueuedCdr {
    /// The columns [`QueuedCdr::from_row`] reads, of the table aliased `t` ("" for none).
    pub(crate) fn columns(t: &str) -> String {
        format!(
            "CAST({t}id AS SIGNED), {t}uuid, {t}freeswitch_host, {t}path, CAST({t}create_time AS SIGNED), \
             CAST({t}retry AS SIGNED)"
        )
    }

    pub(crate) fn from_row(r: &AnyRow) -> QueuedCdr {
        let (freeswitch_host, path, create_time) = (r.get(2), r.get(3), r.get(4));
        QueuedCdr { id: id(r, 0), uuid: uuid(r, 1), freeswitch_host, path, create_time, retry: count(r, 5) }
    }
}

/// Row counts per `done` state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub pending: u64,
    pub done: u64,
    pub error: u64,
}

/// What a crash of a distillery on one CDR left in its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    /// Distilleries this CDR has taken down so far, this one included.
    pub count: u32,
    /// It has reached the poison threshold: `done='error'`, `critical='y'`.
    pub poison: bool,
}

#[async_trait]
pub trait CdrQueue: Send + Sync {
    /// Group commit from intake: all rows in one transaction. A row whose uuid is already
    /// queued is skipped (a FreeSWITCH retry). Returns how many were new.
    async fn enqueue_cdrs(&self, rows: &[NewQueuedCdr]) -> StoreResult<u64>;

    /// The paths already queued for these uuids (intake: a re-post under another name).
    async fn queued_paths(&self, uuids: &[[u8; 16]]) -> StoreResult<Vec<([u8; 16], String)>>;

    /// Claims up to `limit` due rows (`done='n'`, `next_attempt` NULL or <= now) by setting
    /// `next_attempt = lease_until` and recording the claimant, so a crashed process's claims
    /// come back on their own (at once when it restarts).
    async fn claim_cdrs(&self, now: Time, lease_until: Time, limit: u32) -> StoreResult<Vec<QueuedCdr>>;

    /// Extends to `until` the leases of the claimed rows among `ids` this boot still holds,
    /// so a long job keeps a short lease. Returns how many.
    async fn renew_claims(&self, ids: &[u64], until: Time) -> StoreResult<u64>;

    /// Gives claimed rows back (shutdown): due immediately for whoever polls next.
    async fn release_claims(&self, ids: &[u64]) -> StoreResult<()>;

    /// Retriable failure: `retry`+1, due again at `retry_at`, the reason kept in
    /// `cdr_queue_error` (critical='n') so an operator sees why it is waiting.
    async fn schedule_retry(&self, cdr_id: u64, retry_at: Time, why: &str, now: Time) -> StoreResult<()>;

    /// Permanent failure: `done='error'` plus the description. A row that is already done
    /// stays done (a distillery can die while its commit completes).
    async fn mark_error(&self, cdr_id: u64, why: &str, now: Time) -> StoreResult<()>;

    /// A distillery died on this CDR: its crash count goes up in `cdr_queue_error`, so a
    /// process restart forgives nothing. Below `threshold` crashes the row is due again at
    /// `retry_at`; at it, the CDR is a poison pill: `done='error'`, `critical='y'`.
    async fn record_crash(&self, cdr: u64, why: &str, threshold: u32, retry_at: Time, now: Time) -> StoreResult<Crash>;
}

#[async_trait]
impl CdrQueue for Store {
    async fn enqueue_cdrs(&self, rows: &[NewQueuedCdr]) -> StoreResult<u64> {
        let skip = self.dialect.skip_duplicates();
        self.write(|mut tx| async move {
            let mut inserted = 0;
            for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
                let mut qb = QueryBuilder::new("INSERT INTO cdr_queue (uuid, freeswitch_host, path, create_time) ");
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.uuid.to_vec())
                        .push_bind(r.freeswitch_host.clone())
                        .push_bind(r.path.clone())
                        .push_bind(r.create_time);
                });
                qb.push(skip);
                inserted += qb.build().execute(&mut *tx).await?.rows_affected();
            }
            Ok((inserted, tx))
        })
        .await
    }

    async fn queued_paths(&self, uuids: &[[u8; 16]]) -> StoreResult<Vec<([u8; 16], String)>> {
        let mut found = Vec::new();
        for chunk in uuids.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new("SELECT uuid, path FROM cdr_queue WHERE uuid IN (");
            let mut sep = qb.separated(", ");
            for u in chunk {
                sep.push_bind(u.to_vec());
            }
            qb.push(")");
            for r in qb.build().fetch_all(self.pool()).await? {
                let uuid: Vec<u8> = r.get(0);
                if let Ok(uuid) = <[u8; 16]>::try_from(uuid.as_slice()) {
                    found.push((uuid, r.get(1)));
                }
            }
        }
        Ok(found)
    }

    async fn claim_cdrs(&self, now: Time, lease_until: Time, limit: u32) -> StoreResult<Vec<QueuedCdr>> {
        let shard = match self.shard.cdrs() {
            Claimable::Nothing => return Ok(Vec::new()),
            Claimable::Every => String::new(),
            Claimable::Only(condition) => condition,
        };
        let select = format!(
            "SELECT {} FROM cdr_queue WHERE done = 'n' AND (next_attempt IS NULL OR next_attempt <= ?){shard} \
             ORDER BY next_attempt, id LIMIT ?{}",
            QueuedCdr::columns(""),
            self.dialect.skip_locked()
        );
        let select = select.as_str();
        self.write(|mut tx| async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(select))
                .bind(sql_time(now))
                .bind(limit as i64)
                .fetch_all(&mut *tx)
                .await?;
            let claimed: Vec<QueuedCdr> = rows.iter().map(QueuedCdr::from_row).collect();
            self.lease(&mut tx, "cdr_queue", lease_until, claimed.iter().map(|c| c.id)).await?;
            Ok((claimed, tx))
        })
        .await
    }

    async fn renew_claims(&self, ids: &[u64], until: Time) -> StoreResult<u64> {
        self.renew("cdr_queue", ids, until).await
    }

    async fn release_claims(&self, ids: &[u64]) -> StoreResult<()> {
        self.release("cdr_queue", None, ids).await
    }

    async fn schedule_retry(&self, cdr_id: u64, retry_at: Time, why: &str, now: Time) -> StoreResult<()> {
        let failure = &Failure { next: Next::RetryAt(retry_at), why: why.to_string(), critical: false, crashes: None };
        self.write(|mut tx| async move {
            self.fail(&mut tx, cdr_id, failure, now).await?;
            Ok(((), tx))
        })
        .await
    }

    async fn mark_error(&self, cdr_id: u64, why: &str, now: Time) -> StoreResult<()> {
        let failure = &Failure { next: Next::Error, why: why.to_string(), critical: false, crashes: None };
        self.write(|mut tx| async move {
            self.fail(&mut tx, cdr_id, failure, now).await?;
            Ok(((), tx))
        })
        .await
    }

    async fn record_crash(&self, cdr: u64, why: &str, threshold: u32, retry_at: Time, now: Time) -> StoreResult<Crash> {
        let select = format!(
            "SELECT CAST(crashes AS SIGNED) FROM cdr_queue_error WHERE id_cdr_queue = ?{}",
            self.dialect.for_update()
        );
        let select = select.as_str();
        self.write(|mut tx| async move {
            let before: Option<i64> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(select)).bind(cdr as i64).fetch_optional(&mut *tx).await?;
            let count = before.unwrap_or(0) as u32 + 1;
            let poison = count >= threshold;
            let failure = match poison {
                true => Failure {
                    next: Next::Error,
                    why: format!("poison pill: brought down a distillery {count} times; last: {why}"),
                    critical: true,
                    crashes: Some(count),
                },
                false => Failure {
                    next: Next::RetryAt(retry_at),
                    why: format!("internal_failure: {why} (failure {count} of {threshold})"),
                    critical: false,
                    crashes: Some(count),
                },
            };
            let crash = match self.fail(&mut tx, cdr, &failure, now).await? {
                true => Crash { count, poison },
                // it was committed after all: nothing to count
                false => Crash { count: count - 1, poison: false },
            };
            Ok((crash, tx))
        })
        .await
    }
}

/// What becomes of a claimed row that did not succeed.
enum Next {
    /// `retry`+1, due again then.
    RetryAt(Time),
    /// `done='error'`, and no lease time left: `done='n'` by hand makes it due at once.
    Error,
}

/// A failed attempt as `cdr_queue` and its one `cdr_queue_error` row record it.
struct Failure {
    next: Next,
    why: String,
    critical: bool,
    /// The crash count after this one, when a distillery died.
    crashes: Option<u32>,
}

impl Store {
    /// Claims given back, a chunk at a time: due at `due` (NULL: at once).
    pub(super) async fn release(&self, table: &'static str, due: Option<Time>, ids: &[u64]) -> StoreResult<()> {
        for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
            self.write_one(|mut conn| async move {
                let mut qb = QueryBuilder::new(format!("UPDATE {table} SET next_attempt = "));
                qb.push_bind(due.map(sql_time)).push(format!(", {NO_CLAIM} WHERE done = 'n' AND id IN "));
                push_ids(&mut qb, chunk.iter().copied());
                qb.build().execute(&mut *conn).await?;
                Ok(((), conn))
            })
            .await?;
        }
        Ok(())
    }

    /// Records a failed attempt: the queue row's next state and the CDR's one
    /// `cdr_queue_error` row with the latest reason (and the crash count when given) — only
    /// while the row is still `done='n'`: a distillery can die while its commit completes, and
    /// a CDR that is done has no error. Returns whether it was recorded.
    async fn fail(
        &self,
        tx: &mut sqlx::AnyConnection,
        cdr_id: u64,
        f: &Failure,
        now: Time,
    ) -> Result<bool, sqlx::Error> {
        let update = match f.next {
            Next::RetryAt(at) => sqlx::query(
                "UPDATE cdr_queue SET retry = retry + 1, next_attempt = ?, claimed_by = NULL, claim_boot = NULL, \
                     claim_seq = NULL WHERE id = ? AND done = 'n'",
            )
            .bind(sql_time(at)),
            Next::Error => {
                sqlx::query("UPDATE cdr_queue SET done = ?, next_attempt = NULL WHERE id = ? AND done = 'n'")
                    .bind(RowState::Error)
            }
        };
        if update.bind(cdr_id as i64).execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        let mut columns = vec!["description", "critical", "last_error_date"];
        if f.crashes.is_some() {
            columns.push("crashes");
        }
        let sql = format!(
            "INSERT INTO cdr_queue_error (id_cdr_queue, description, critical, first_error_date, last_error_date, \
             crashes) VALUES (?, ?, ?, ?, ?, ?){}",
            self.dialect.upsert("id_cdr_queue", &columns)
        );
        let t = sql_time(now);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cdr_id as i64)
            .bind(f.why.clone())
            .bind(if f.critical { "y" } else { "n" })
            .bind(t.clone())
            .bind(t)
            .bind(f.crashes.unwrap_or(0) as i64)
            .execute(&mut *tx)
            .await?;
        Ok(true)
    }

    /// `cdr_queue` rows by state (the seed's queue gauges, `status`).
    pub async fn queue_counts(&self) -> StoreResult<QueueCounts> {
        let rows = sqlx::query("SELECT CAST(done AS CHAR), COUNT(*) FROM cdr_queue GROUP BY done")
            .fetch_all(&self.pool)
            .await?;
        let mut c = QueueCounts::default();
        for r in &rows {
            let n = r.get::<i64, _>(1) as u64;
            match r.get::<RowState, _>(0) {
                RowState::Done => c.done += n,
                RowState::Error => c.error += n,
                RowState::Pending => c.pending += n,
            }
        }
        Ok(c)
    }
}
