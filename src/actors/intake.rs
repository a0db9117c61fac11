//! Intake: the group commit of `cdr_queue` rows. HTTP handlers have already written each raw
//! CDR (file fsynced, renamed); one batch syncs their directories, inserts every row in one
//! transaction, and wakes the QueuePoller so the CDRs are picked up at once.
//!
//! When the database does not take the batch in time (down, locked, unreachable), its rows
//! go to the local spool instead and the backfill actor inserts them later: the raw CDRs are
//! durable either way, so the POSTs can still be answered 200.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::backfill::Backfill;
use super::group_commit::{Batch, CommitError, GroupCommit, GroupCommitMsg};
use super::mailbox::Mailbox;
use super::poller::PollerMsg;
use crate::domain::outcome::Classify;
use crate::spool::Spool;
use crate::storage::BlobStore;
use crate::store::{NewQueuedCdr, Repository, StoreError};

pub struct IntakeBatch {
    pub repo: Arc<dyn Repository>,
    pub raw_store: Arc<dyn BlobStore>,
    /// This process's QueuePoller, when it runs the distiller role.
    pub wake: Option<Mailbox<PollerMsg>>,
    /// Where rows go when the database does not take them (None: spool disabled).
    pub spool: Option<(Arc<Spool>, Mailbox<Backfill>)>,
    /// How long the database gets before a batch is spooled (or refused).
    pub db_timeout: Duration,
}

pub type Intake = GroupCommit<IntakeBatch>;
pub type IntakeMsg = GroupCommitMsg<IntakeBatch>;

#[async_trait]
impl Batch for IntakeBatch {
    type Item = NewQueuedCdr;
    /// The path already queued for the row's uuid, when it is another file than the row's
    /// own (a re-post under another host, date or format): intake settles that file.
    type Output = Option<String>;
    const ROLE: &'static str = "intake";

    async fn commit(&self, rows: &[NewQueuedCdr]) -> Result<Vec<Option<String>>, CommitError> {
        let paths: Vec<String> = rows.iter().map(|r| r.path.clone()).collect();
        self.raw_store.sync(&paths).await.map_err(|e| CommitError::storage("making the raw CDRs durable", e))?;
        // while older rows wait in the spool, newer ones queue behind them: the database is
        // either away or being backfilled, and a batch must not wait on it twice
        if self.spool.as_ref().is_some_and(|(spool, _)| spool.rows() > 0) {
            return self.spool(rows, None).await;
        }
        // With a spool, the database gets `db_timeout` and the batch is spooled after it (an
        // insert that went through after all is skipped by the backfill). Without one, the
        // batch waits for the database's own answer: the POSTs are answered 503 on time by
        // the HTTP layer, and whether each row went in stays known, so a file is removed
        // only when its row certainly is not there.
        let inserted = match &self.spool {
            Some(_) => match tokio::time::timeout(self.db_timeout, self.repo.enqueue_cdrs(rows)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::TimedOut(format!("no answer within {:?}", self.db_timeout))),
            },
            None => self.repo.enqueue_cdrs(rows).await,
        };
        let new = match inserted {
            Ok(new) => new,
            // a row the database refuses would be refused again after any outage
            Err(e) if !e.is_retriable() => return Err(CommitError::database("queueing the CDRs", e)),
            Err(e) => return self.spool(rows, Some(e)).await,
        };
        tracing::debug!(batch = rows.len(), new, "cdr_queue group commit");
        if let Some(poller) = &self.wake {
            let _ = poller.send(PollerMsg::Wake);
        }
        // Which rows' uuids were queued before under another file: one indexed read per
        // batch, skipped when SQLite counted every row as new (MySQL counts a skipped
        // duplicate as affected, so there `new` cannot tell). A failed lookup only leaves
        // such a file to the start-up sweep.
        if new as usize == rows.len() && self.repo.backend() == "sqlite" {
            return Ok(vec![None; rows.len()]);
        }
        let uuids: Vec<[u8; 16]> = rows.iter().map(|r| r.uuid).collect();
        let queued = self.repo.queued_paths(&uuids).await.unwrap_or_default();
        Ok(rows
            .iter()
            .map(|r| queued.iter().find(|(u, p)| *u == r.uuid && *p != r.path).map(|(_, p)| p.clone()))
            .collect())
    }
}

impl IntakeBatch {
    /// Journals the rows the database did not take; a batch that was in fact committed
    /// (the answer only came late) is inserted again by the backfill, which skips it.
    async fn spool(
        &self,
        rows: &[NewQueuedCdr],
        db_error: Option<StoreError>,
    ) -> Result<Vec<Option<String>>, CommitError> {
        let why =
            db_error.as_ref().map_or_else(|| "older rows are still being backfilled".to_string(), |e| e.to_string());
        let Some((spool, backfill)) = &self.spool else {
            return Err(CommitError::database("queueing the CDRs", db_error.unwrap_or(StoreError::NotTaken(why))));
        };
        // whether the database may still have taken them decides whether intake may undo
        let not_taken = |msg: String| match &db_error {
            Some(StoreError::TimedOut(_)) => StoreError::TimedOut(msg),
            _ => StoreError::NotTaken(msg),
        };
        let (spool2, owned) = (spool.clone(), rows.to_vec());
        let appended = tokio::task::spawn_blocking(move || spool2.append(&owned))
            .await
            .map_err(|e| CommitError::database("spooling the CDRs", not_taken(e.to_string())))?;
        if let Err(e) = appended {
            return Err(CommitError::database("queueing the CDRs", not_taken(format!("{why}; and {e}"))));
        }
        crate::events::Spooled { rows: rows.len(), why: &why, database_failed: db_error.is_some() }.emit();
        let _ = backfill.send(Backfill::Wake);
        Ok(vec![None; rows.len()])
    }
}
