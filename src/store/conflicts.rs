//! Re-posts that differ from the CDR already queued under their uuid (see intake): what the
//! queue row says about the first, putting a permanently failed one back in the queue, and
//! the `intake_conflicts` list `cdrmunch status` and `cdrmunch why` show.

use serde::Serialize;
use sqlx::Row;

use super::claims::NO_CLAIM;
use super::columns::id;
use super::{Store, StoreResult};

/// The `cdr_queue` row of a uuid, as far as a re-post needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRow {
    pub id: u64,
    pub path: String,
    /// `n`, `y` or `error`.
    pub done: String,
}

/// One re-post that differed from the first version.
#[derive(Debug, Clone, Serialize)]
pub struct IntakeConflict {
    pub uuid: String,
    pub kind: String,
    pub first_path: String,
    pub other_path: String,
    pub create_time: i64,
}

impl IntakeConflict {
    fn from_row(r: &sqlx::any::AnyRow) -> IntakeConflict {
        let uuid: Vec<u8> = r.get(0);
        let uuid =
            <[u8; 16]>::try_from(uuid.as_slice()).map(|b| uuid::Uuid::from_bytes(b).to_string()).unwrap_or_default();
        IntakeConflict { uuid, kind: r.get(1), first_path: r.get(2), other_path: r.get(3), create_time: r.get(4) }
    }
}

const CONFLICT_COLUMNS: &str = "uuid, kind, first_path, other_path, create_time";

impl Store {
    pub async fn queued_row(&self, uuid: [u8; 16]) -> StoreResult<Option<QueuedRow>> {
        let row = sqlx::query("SELECT CAST(id AS SIGNED), path, done FROM cdr_queue WHERE uuid = ?")
            .bind(uuid.to_vec())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| QueuedRow { id: id(&r, 0), path: r.get(1), done: r.get(2) }))
    }

    /// A CDR whose first version failed for good goes back in the queue with its new file,
    /// as if new. Only while it is still in error (two re-posts at once: one wins).
    pub async fn requeue_failed(&self, cdr_id: u64, path: &str) -> StoreResult<bool> {
        let (path, cdr_id) = (path.to_string(), cdr_id as i64);
        self.write_one(|mut conn| {
            let path = path.clone();
            async move {
                let sql = format!(
                    "UPDATE cdr_queue SET done = 'n', retry = 0, next_attempt = NULL, {NO_CLAIM}, path = ? \
                     WHERE id = ? AND done = 'error'"
                );
                let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(path).bind(cdr_id).execute(&mut *conn).await?;
                Ok((r.rows_affected() == 1, conn))
            }
        })
        .await
    }

    pub async fn record_conflict(&self, uuid: [u8; 16], c: &IntakeConflict) -> StoreResult<()> {
        let c = c.clone();
        self.write_one(|mut conn| {
            let c = c.clone();
            async move {
                sqlx::query(
                    "INSERT INTO intake_conflicts (uuid, kind, first_path, other_path, create_time) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(uuid.to_vec())
                .bind(c.kind)
                .bind(c.first_path)
                .bind(c.other_path)
                .bind(c.create_time)
                .execute(&mut *conn)
                .await?;
                Ok(((), conn))
            }
        })
        .await
    }

    /// The newest conflicts, newest first.
    pub async fn recent_conflicts(&self, limit: u32) -> StoreResult<Vec<IntakeConflict>> {
        let sql = format!("SELECT {CONFLICT_COLUMNS} FROM intake_conflicts ORDER BY id DESC LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit as i64).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(IntakeConflict::from_row).collect())
    }

    pub async fn conflicts_of(&self, uuid: [u8; 16]) -> StoreResult<Vec<IntakeConflict>> {
        let sql = format!("SELECT {CONFLICT_COLUMNS} FROM intake_conflicts WHERE uuid = ? ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(uuid.to_vec()).fetch_all(self.pool()).await?;
        Ok(rows.iter().map(IntakeConflict::from_row).collect())
    }
}

/// A `cdr_queue` row with its `cdr_queue_error`, for `cdrmunch why`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStory {
    pub id: u64,
    pub freeswitch_host: String,
    pub path: String,
    pub create_time: i64,
    pub done: String,
    pub retry: u32,
    pub next_attempt: Option<String>,
    pub error: Option<String>,
    pub critical: Option<String>,
    pub first_error: Option<String>,
    pub last_error: Option<String>,
}

impl Store {
    pub async fn queue_story(&self, uuid: [u8; 16]) -> StoreResult<Option<QueueStory>> {
        let row = sqlx::query(
            "SELECT CAST(q.id AS SIGNED), q.freeswitch_host, q.path, q.create_time, q.done, CAST(q.retry AS SIGNED), \
             CAST(q.next_attempt AS CHAR), e.description, e.critical, CAST(e.first_error_date AS CHAR), \
             CAST(e.last_error_date AS CHAR) \
             FROM cdr_queue q LEFT JOIN cdr_queue_error e ON e.id_cdr_queue = q.id WHERE q.uuid = ?",
        )
        .bind(uuid.to_vec())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| QueueStory {
            id: id(&r, 0),
            freeswitch_host: r.get(1),
            path: r.get(2),
            create_time: r.get(3),
            done: r.get(4),
            retry: super::columns::count(&r, 5),
            next_attempt: r.get(6),
            error: r.get(7),
            critical: r.get(8),
            first_error: r.get(9),
            last_error: r.get(10),
        }))
    }
}
