//! MySQL / MariaDB / Aurora: the production database. Claims use `FOR UPDATE SKIP LOCKED`
//! (MariaDB >= 10.6, MySQL >= 8.0) so several cdrmunch processes share one queue.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection, MySql, MySqlPool, QueryBuilder, Row};

use super::sqlite::counts_from;
use super::*;

pub struct MysqlRepository {
    pool: MySqlPool,
}

/// ER_BAD_DB_ERROR: the database named in the URL does not exist yet.
const ER_BAD_DB: u16 = 1049;
/// ER_LOCK_DEADLOCK and ER_LOCK_WAIT_TIMEOUT: InnoDB rolled the transaction back and asks
/// for it to be restarted.
const ER_RESTART_TRANSACTION: [u16; 2] = [1213, 1205];

fn must_restart(e: &StoreError) -> bool {
    match e {
        StoreError::Query(sqlx::Error::Database(db)) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|m| ER_RESTART_TRANSACTION.contains(&m.number())),
        _ => false,
    }
}

/// Intake inserts, claims and the committer's updates touch the same `cdr_queue` indexes, so
/// under load InnoDB now and then picks one of them as a deadlock victim. Restarting the
/// transaction is the cure InnoDB prescribes; it is cheaper than failing a POST with 503 or
/// sending a whole batch of CDRs into retry backoff.
async fn retry_deadlocks<T, F, Fut>(mut op: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    const ATTEMPTS: u32 = 8;
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if must_restart(&e) && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                let jitter = rand::random_range(0..=2u64 << attempt);
                tracing::debug!(attempt, "restarting transaction after: {e}");
                tokio::time::sleep(Duration::from_millis(jitter)).await;
            }
            other => return other,
        }
    }
}

impl MysqlRepository {
    /// Connects, creating the database named in the URL when it does not exist yet.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let opts = MySqlConnectOptions::from_str(url).map_err(|_| StoreError::BadUrl(url.to_string()))?;
        // READ COMMITTED: under InnoDB's default REPEATABLE READ a claim's FOR UPDATE takes
        // next-key locks on every index record it scans, which blocks intake's inserts and
        // the committer's updates of the same `done='n'` range.
        let pool_opts = || {
            MySqlPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        set_tcp_nodelay_on_sockets();
                        sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(conn).await?;
                        Ok(())
                    })
                })
        };
        match pool_opts().connect_with(opts.clone()).await {
            Ok(pool) => Ok(Self { pool }),
            Err(sqlx::Error::Database(e))
                if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().is_some_and(|m| m.number() == ER_BAD_DB) =>
            {
                let db = opts.get_database().unwrap_or_default().replace('`', "``");
                let mut conn = opts.clone().database("").connect().await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4")))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok(Self { pool: pool_opts().connect_with(opts).await? })
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    async fn write_tx(&self) -> Result<sqlx::Transaction<'_, MySql>, sqlx::Error> {
        self.pool.begin().await
    }
}

/// sqlx 0.9.0 stopped setting TCP_NODELAY on its sockets (upstream issue #4335). A write
/// that follows one the server does not answer (a statement-cache eviction's
/// COM_STMT_CLOSE, then the next PREPARE) then waits for the server's delayed ACK: 40–200 ms
/// stalls that measured as 40 ms batch commits. sqlx offers no socket hook, so right after
/// each connect every TCP socket of the process gets TCP_NODELAY — which every latency-
/// sensitive client sets anyway (hyper does for HTTP). Remove once sqlx sets it again.
fn set_tcp_nodelay_on_sockets() {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return };
    for entry in fds.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<libc::c_int>().ok()) else { continue };
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt only reads the option value we pass; on a socket that is not
        // TCP (unix, UDP) it fails with an error that we ignore.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

#[async_trait]
impl Repository for MysqlRepository {
    fn backend(&self) -> &'static str {
        "mysql"
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/mysql").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn enqueue_cdrs(&self, rows: &[NewQueuedCdr]) -> StoreResult<u64> {
        retry_deadlocks(|| async {
            let mut tx = self.pool.begin().await?;
            let mut inserted = 0;
            for chunk in rows.chunks(MAX_ROWS_PER_INSERT) {
                let mut qb: QueryBuilder<MySql> =
                    QueryBuilder::new("INSERT INTO cdr_queue (uuid, freeswitch_host, path, create_time) ");
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.uuid.to_vec())
                        .push_bind(r.freeswitch_host.clone())
                        .push_bind(r.path.clone())
                        .push_bind(r.create_time);
                });
                // `id = id` keeps the first row of a uuid: a FreeSWITCH retry changes nothing.
                qb.push(" ON DUPLICATE KEY UPDATE id = id");
                inserted += qb.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(inserted)
        })
        .await
    }

    async fn claim_cdrs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueuedCdr>> {
        retry_deadlocks(|| async {
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(
                "SELECT id, uuid, freeswitch_host, path, CAST(create_time AS SIGNED), CAST(retry AS SIGNED) \
                 FROM cdr_queue WHERE done = 'n' AND (next_attempt IS NULL OR next_attempt <= ?) \
                 ORDER BY next_attempt, id LIMIT ? FOR UPDATE SKIP LOCKED",
            )
            .bind(sql_time(now))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let claimed: Vec<QueuedCdr> = rows
                .iter()
                .map(|r| QueuedCdr {
                    id: r.get::<u64, _>(0),
                    uuid: uuid_bytes(&r.get::<Vec<u8>, _>(1)),
                    freeswitch_host: r.get(2),
                    path: r.get(3),
                    create_time: r.get(4),
                    retry: r.get::<i64, _>(5) as u32,
                })
                .collect();
            let ids: Vec<u64> = claimed.iter().map(|c| c.id).collect();
            lease(&mut tx, "UPDATE cdr_queue SET next_attempt = ", &ids, lease_until).await?;
            tx.commit().await?;
            Ok(claimed)
        })
        .await
    }

    async fn commit_normalized(
        &self,
        batch: &[(u64, NewNormalizedCdr)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<CommitResult>> {
        retry_deadlocks(|| async { commit_normalized_batch!(MySql, self.pool.begin().await?, batch, now) }).await
    }

    async fn schedule_retry(
        &self,
        cdr_id: u64,
        next_attempt: DateTime<Utc>,
        description: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        retry_deadlocks(|| async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE cdr_queue SET retry = retry + 1, next_attempt = ? WHERE id = ? AND done = 'n'")
                .bind(sql_time(next_attempt))
                .bind(cdr_id)
                .execute(&mut *tx)
                .await?;
            upsert_error(&mut tx, cdr_id, description, false, now).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn mark_error(&self, cdr_id: u64, description: &str, critical: bool, now: DateTime<Utc>) -> StoreResult<()> {
        retry_deadlocks(|| async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE cdr_queue SET done = 'error' WHERE id = ? AND done = 'n'")
                .bind(cdr_id)
                .execute(&mut *tx)
                .await?;
            upsert_error(&mut tx, cdr_id, description, critical, now).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn release_claims(&self, ids: &[u64]) -> StoreResult<()> {
        retry_deadlocks(|| async {
            for chunk in ids.chunks(MAX_ROWS_PER_INSERT) {
                let mut qb: QueryBuilder<MySql> =
                    QueryBuilder::new("UPDATE cdr_queue SET next_attempt = NULL WHERE done = 'n' AND id IN (");
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                qb.build().execute(&self.pool).await?;
            }
            Ok(())
        })
        .await
    }

    async fn queue_counts(&self) -> StoreResult<QueueCounts> {
        let rows = sqlx::query("SELECT CAST(done AS CHAR), COUNT(*) FROM cdr_queue GROUP BY done")
            .fetch_all(&self.pool)
            .await?;
        Ok(counts_from(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))))
    }

    async fn queue_errors(&self) -> StoreResult<Vec<QueueError>> {
        let rows = sqlx::query(
            "SELECT e.id_cdr_queue, q.uuid, CAST(q.done AS CHAR), COALESCE(e.description, ''), \
             CAST(e.critical AS CHAR) FROM cdr_queue_error e JOIN cdr_queue q ON q.id = e.id_cdr_queue \
             ORDER BY e.id_cdr_queue",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| QueueError {
                id_cdr_queue: r.get::<u64, _>(0),
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
        let rows = sqlx::query("SELECT task_type, CAST(done AS CHAR), COUNT(*) FROM tasks GROUP BY task_type, done")
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
            "SELECT t.task_type, CAST(t.node_index AS SIGNED) FROM tasks t \
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
        retry_deadlocks(|| async {
            let mut tx = self.pool.begin().await?;
            // MariaDB has no `FOR UPDATE OF`: lock the task rows alone, then read their CDRs.
            let rows = sqlx::query(
                "SELECT id, id_normalized_cdrs, task_type, CAST(node_index AS SIGNED), CAST(retry AS SIGNED), \
                 DATE_FORMAT(create_time, '%Y-%m-%d %H:%i:%s') FROM tasks \
                 WHERE task_type = ? AND done = 'n' AND next_attempt <= ? \
                 ORDER BY next_attempt, id LIMIT ? FOR UPDATE SKIP LOCKED",
            )
            .bind(task_type)
            .bind(sql_time(now))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                tx.commit().await?;
                return Ok(Vec::new());
            }
            let heads: Vec<TaskHead> = rows
                .iter()
                .map(|r| TaskHead {
                    id: r.get::<u64, _>(0),
                    id_normalized_cdrs: r.get::<u64, _>(1),
                    task_type: r.get(2),
                    node_index: r.get::<i64, _>(3) as u32,
                    retry: r.get::<i64, _>(4) as u32,
                    create_time: parse_sql_time(&r.get::<String, _>(5)),
                })
                .collect();
            let mut qb: QueryBuilder<MySql> =
                QueryBuilder::new("SELECT id, uuid, path, COALESCE(cdr_path, '') FROM normalized_cdrs WHERE id IN (");
            let mut sep = qb.separated(", ");
            for h in &heads {
                sep.push_bind(h.id_normalized_cdrs);
            }
            qb.push(")");
            let cdrs = qb.build().fetch_all(&mut *tx).await?;
            let cdrs =
                cdrs.iter().map(|r| (r.get::<u64, _>(0), uuid_bytes(&r.get::<Vec<u8>, _>(1)), r.get(2), r.get(3)));
            let claimed = join_claims(heads, cdrs);
            let ids: Vec<u64> = claimed.iter().map(|c| c.id).collect();
            lease(&mut tx, "UPDATE tasks SET next_attempt = ", &ids, lease_until).await?;
            tx.commit().await?;
            Ok(claimed)
        })
        .await
    }

    async fn finish_task(&self, task_id: u64, finish: &TaskFinish) -> StoreResult<bool> {
        retry_deadlocks(|| async { finish_task_on!(&self.pool, task_id, finish) }).await
    }

    async fn release_tasks(&self, ids: &[u64], now: DateTime<Utc>) -> StoreResult<()> {
        retry_deadlocks(|| async { release_tasks_on!(MySql, &self.pool, ids, now) }).await
    }

    async fn task_states(&self, uuid: [u8; 16]) -> StoreResult<Vec<TaskState>> {
        task_states_on!(&self.pool, uuid)
    }

    async fn insert_call_log(&self, entry: &CallLogEntry) -> StoreResult<bool> {
        retry_deadlocks(|| async { insert_call_log_on!(&self.pool, "INSERT IGNORE", entry) }).await
    }

    fn operations(&self) -> &dyn Operations {
        self
    }
}

/// Moves `next_attempt` of the claimed rows to the end of their lease.
async fn lease(
    tx: &mut sqlx::Transaction<'_, MySql>,
    head: &'static str,
    ids: &[u64],
    until: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(head);
    qb.push_bind(sql_time(until)).push(" WHERE id IN (");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(")");
    qb.build().execute(&mut **tx).await?;
    Ok(())
}

async fn upsert_error(
    tx: &mut sqlx::Transaction<'_, MySql>,
    cdr_id: u64,
    description: &str,
    critical: bool,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let t = sql_time(now);
    sqlx::query(
        "INSERT INTO cdr_queue_error (id_cdr_queue, description, critical, first_error_date, last_error_date) \
         VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE description = VALUES(description), \
         critical = VALUES(critical), last_error_date = VALUES(last_error_date)",
    )
    .bind(cdr_id)
    .bind(description)
    .bind(if critical { "y" } else { "n" })
    .bind(&t)
    .bind(&t)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A real InnoDB deadlock with our transaction as the victim (it holds fewer locks than
    /// the other one): the victim is restarted and then commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deadlock_victim_is_restarted() {
        let server = std::env::var("CDRMUNCH_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let name = format!("cdrmunch_dl_{}", uuid::Uuid::new_v4().simple());
        let repo = MysqlRepository::connect(&format!("{server}/{name}"), 4)
            .await
            .expect("MariaDB (scripts/test.sh starts one)");
        let pool = repo.pool().clone();
        sqlx::query("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO t SELECT seq, 0 FROM seq_1_to_200").execute(&pool).await.unwrap();

        let attempts = AtomicU32::new(0);
        let result = retry_deadlocks(|| async {
            let first = attempts.fetch_add(1, Ordering::SeqCst) == 0;
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE t SET v = v + 1 WHERE id = 1").execute(&mut *tx).await?;
            if first {
                // The other transaction locks rows 2..=150, then waits for row 1; we then wait
                // for row 2: a cycle, and InnoDB rolls back the lighter side — us.
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                let p = pool.clone();
                let other = tokio::spawn(async move {
                    let mut b = p.begin().await.unwrap();
                    sqlx::query("UPDATE t SET v = v + 1 WHERE id BETWEEN 2 AND 150").execute(&mut *b).await.unwrap();
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
            tx.commit().await?;
            Ok(())
        })
        .await;
        let v1: i32 = sqlx::query_scalar("SELECT v FROM t WHERE id = 1").fetch_one(&pool).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`"))).execute(&pool).await;
        result.expect("restarted after the deadlock");
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_eq!(v1, 2, "the other transaction and our restarted one both committed");
    }
}

operator_methods!(MysqlRepository, MySql);
