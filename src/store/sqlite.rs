//! SQLite: the embedded default. WAL with `synchronous=FULL`, so a commit is on disk before
//! intake answers 200; writers serialise on SQLite's lock (`BEGIN IMMEDIATE`, busy timeout).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::*;

pub struct SqliteRepository {
    pool: SqlitePool,
}

impl SqliteRepository {
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::BadUrl(url.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        if let Some(parent) = opts.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
            }
        }
        // Writers serialise on SQLite's lock anyway, and every extra connection keeps a page
        // cache that each commit elsewhere invalidates: a few connections do more than many.
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.clamp(2, 4))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Takes the write lock up front: a deferred transaction that upgrades can deadlock.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'_, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

#[async_trait]
impl Repository for SqliteRepository {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn enqueue_cdrs(&self, rows: &[NewQueuedCdr]) -> StoreResult<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut inserted = 0;
        for chunk in rows.chunks(MAX_ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT OR IGNORE INTO cdr_queue (uuid, freeswitch_host, path, create_time) ");
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.uuid.to_vec())
                    .push_bind(r.freeswitch_host.clone())
                    .push_bind(r.path.clone())
                    .push_bind(r.create_time);
            });
            inserted += qb.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn claim_cdrs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueuedCdr>> {
        // One statement, so the select and the lease are atomic under SQLite's write lock.
        let rows = sqlx::query(
            "UPDATE cdr_queue SET next_attempt = ?1 WHERE id IN ( \
               SELECT id FROM cdr_queue WHERE done = 'n' \
               AND (next_attempt IS NULL OR next_attempt <= ?2) \
               ORDER BY next_attempt, id LIMIT ?3) \
             RETURNING id, uuid, freeswitch_host, path, create_time, retry",
        )
        .bind(sql_time(lease_until))
        .bind(sql_time(now))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<QueuedCdr> = rows
            .iter()
            .map(|r| QueuedCdr {
                id: r.get::<i64, _>(0) as u64,
                uuid: uuid_bytes(&r.get::<Vec<u8>, _>(1)),
                freeswitch_host: r.get(2),
                path: r.get(3),
                create_time: r.get(4),
                retry: r.get::<i64, _>(5) as u32,
            })
            .collect();
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    async fn commit_normalized(
        &self,
        batch: &[(u64, NewNormalizedCdr)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<CommitResult>> {
        commit_normalized_batch!(Sqlite, self.pool.begin_with("BEGIN IMMEDIATE").await?, batch, now)
    }

    async fn schedule_retry(
        &self,
        cdr_id: u64,
        next_attempt: DateTime<Utc>,
        description: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE cdr_queue SET retry = retry + 1, next_attempt = ? WHERE id = ? AND done = 'n'")
            .bind(sql_time(next_attempt))
            .bind(cdr_id as i64)
            .execute(&mut *tx)
            .await?;
        upsert_error(&mut tx, cdr_id, description, false, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_error(&self, cdr_id: u64, description: &str, critical: bool, now: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE cdr_queue SET done = 'error' WHERE id = ? AND done = 'n'")
            .bind(cdr_id as i64)
            .execute(&mut *tx)
            .await?;
        upsert_error(&mut tx, cdr_id, description, critical, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_claims(&self, ids: &[u64]) -> StoreResult<()> {
        for chunk in ids.chunks(MAX_ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("UPDATE cdr_queue SET next_attempt = NULL WHERE done = 'n' AND id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id as i64);
            }
            qb.push(")");
            qb.build().execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn queue_counts(&self) -> StoreResult<QueueCounts> {
        let rows = sqlx::query("SELECT done, COUNT(*) FROM cdr_queue GROUP BY done").fetch_all(&self.pool).await?;
        Ok(counts_from(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))))
    }

    async fn queue_errors(&self) -> StoreResult<Vec<QueueError>> {
        let rows = sqlx::query(
            "SELECT e.id_cdr_queue, q.uuid, q.done, COALESCE(e.description, ''), e.critical \
             FROM cdr_queue_error e JOIN cdr_queue q ON q.id = e.id_cdr_queue ORDER BY e.id_cdr_queue",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| QueueError {
                id_cdr_queue: r.get::<i64, _>(0) as u64,
                uuid: uuid_bytes(&r.get::<Vec<u8>, _>(1)),
                done: r.get(2),
                description: r.get(3),
                critical: r.get::<String, _>(4) == "y",
            })
            .collect())
    }

    async fn normalized_counts(&self) -> StoreResult<(u64, u64)> {
        let r = sqlx::query("SELECT (SELECT COUNT(*) FROM normalized_cdrs), (SELECT COUNT(*) FROM tasks)")
            .fetch_one(&self.pool)
            .await?;
        Ok((r.get::<i64, _>(0) as u64, r.get::<i64, _>(1) as u64))
    }

    async fn task_counts(&self) -> StoreResult<Vec<(String, String, u64)>> {
        let rows = sqlx::query("SELECT task_type, done, COUNT(*) FROM tasks GROUP BY task_type, done")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get::<i64, _>(2) as u64)).collect())
    }

    async fn normalized_uuids(&self) -> StoreResult<Vec<[u8; 16]>> {
        let rows = sqlx::query("SELECT uuid FROM normalized_cdrs").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| uuid_bytes(&r.get::<Vec<u8>, _>(0))).collect())
    }

    async fn tasks_for(&self, uuid: [u8; 16]) -> StoreResult<Vec<(String, u32)>> {
        let rows = sqlx::query(
            "SELECT t.task_type, t.node_index FROM tasks t \
             JOIN normalized_cdrs n ON n.id = t.id_normalized_cdrs WHERE n.uuid = ? ORDER BY t.node_index",
        )
        .bind(uuid.to_vec())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get::<i64, _>(1) as u32)).collect())
    }

    async fn claim_tasks(
        &self,
        task_type: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedTask>> {
        // The lease is one statement (atomic under the write lock); the join reads rows
        // that never change once committed.
        let rows = sqlx::query(
            "UPDATE tasks SET next_attempt = ?1 WHERE id IN ( \
               SELECT id FROM tasks WHERE task_type = ?2 AND done = 'n' AND next_attempt <= ?3 \
               ORDER BY next_attempt, id LIMIT ?4) \
             RETURNING id, id_normalized_cdrs, task_type, node_index, retry, create_time",
        )
        .bind(sql_time(lease_until))
        .bind(task_type)
        .bind(sql_time(now))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let heads: Vec<TaskHead> = rows
            .iter()
            .map(|r| TaskHead {
                id: r.get::<i64, _>(0) as u64,
                id_normalized_cdrs: r.get::<i64, _>(1) as u64,
                task_type: r.get(2),
                node_index: r.get::<i64, _>(3) as u32,
                retry: r.get::<i64, _>(4) as u32,
                create_time: parse_sql_time(&r.get::<String, _>(5)),
            })
            .collect();
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id, uuid, path, COALESCE(cdr_path, '') FROM normalized_cdrs WHERE id IN (");
        let mut sep = qb.separated(", ");
        for h in &heads {
            sep.push_bind(h.id_normalized_cdrs as i64);
        }
        qb.push(")");
        let cdrs = qb.build().fetch_all(&self.pool).await?;
        let cdrs =
            cdrs.iter().map(|r| (r.get::<i64, _>(0) as u64, uuid_bytes(&r.get::<Vec<u8>, _>(1)), r.get(2), r.get(3)));
        Ok(join_claims(heads, cdrs))
    }

    async fn finish_task(&self, task_id: u64, finish: &TaskFinish) -> StoreResult<bool> {
        finish_task_on!(&self.pool, task_id, finish)
    }

    async fn release_tasks(&self, ids: &[u64], now: DateTime<Utc>) -> StoreResult<()> {
        release_tasks_on!(Sqlite, &self.pool, ids, now)
    }

    async fn task_states(&self, uuid: [u8; 16]) -> StoreResult<Vec<TaskState>> {
        task_states_on!(&self.pool, uuid)
    }

    async fn insert_call_log(&self, entry: &CallLogEntry) -> StoreResult<bool> {
        insert_call_log_on!(&self.pool, "INSERT OR IGNORE", entry)
    }

    fn operations(&self) -> &dyn Operations {
        self
    }
}

async fn upsert_error(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    cdr_id: u64,
    description: &str,
    critical: bool,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let t = sql_time(now);
    sqlx::query(
        "INSERT INTO cdr_queue_error (id_cdr_queue, description, critical, first_error_date, last_error_date) \
         VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (id_cdr_queue) DO UPDATE SET \
         description = excluded.description, critical = excluded.critical, last_error_date = excluded.last_error_date",
    )
    .bind(cdr_id as i64)
    .bind(description)
    .bind(if critical { "y" } else { "n" })
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Folds `(done, count)` rows into the three states.
pub(super) fn counts_from(rows: impl Iterator<Item = (String, i64)>) -> QueueCounts {
    let mut c = QueueCounts::default();
    for (done, n) in rows {
        match done.as_str() {
            "y" => c.done += n as u64,
            "error" => c.error += n as u64,
            _ => c.pending += n as u64,
        }
    }
    c
}

operator_methods!(SqliteRepository, Sqlite);
