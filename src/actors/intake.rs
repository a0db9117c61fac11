//! Intake: the group commit of `cdr_queue` rows. HTTP handlers have already written each raw
//! CDR (file fsynced, renamed); one batch syncs their directories, inserts every row in one
//! transaction, and wakes the QueuePoller so the CDRs are picked up at once.

use std::sync::Arc;

use async_trait::async_trait;

use super::group_commit::{Batch, CommitError, GroupCommit, GroupCommitMsg};
use super::mailbox::Mailbox;
use super::poller::PollerMsg;
use crate::storage::BlobStore;
use crate::store::{NewQueuedCdr, Repository};

pub struct IntakeBatch {
    pub repo: Arc<dyn Repository>,
    pub raw_store: Arc<dyn BlobStore>,
    /// This process's QueuePoller, when it runs the distiller role.
    pub wake: Option<Mailbox<PollerMsg>>,
}

pub type Intake = GroupCommit<IntakeBatch>;
pub type IntakeMsg = GroupCommitMsg<IntakeBatch>;

#[async_trait]
impl Batch for IntakeBatch {
    type Item = NewQueuedCdr;
    type Output = ();
    const ROLE: &'static str = "intake";

    async fn commit(&self, rows: &[NewQueuedCdr]) -> Result<Vec<()>, CommitError> {
        let paths: Vec<String> = rows.iter().map(|r| r.path.clone()).collect();
        self.raw_store.sync(&paths).await.map_err(|e| CommitError::storage("making the raw CDRs durable", e))?;
        let new = self.repo.enqueue_cdrs(rows).await.map_err(|e| CommitError::database("queueing the CDRs", e))?;
        tracing::debug!(batch = rows.len(), new, "cdr_queue group commit");
        if let Some(poller) = &self.wake {
            let _ = poller.send(PollerMsg::Wake);
        }
        Ok(vec![(); rows.len()])
    }
}
