//! Intake: group commit of `cdr_queue` rows. HTTP handlers have already written the raw CDR
//! (file fsynced, renamed); one batch then syncs the directories, inserts every row in one
//! transaction, and wakes the QueuePoller so the CDRs are picked up at once.

use std::sync::Arc;

use async_trait::async_trait;

use super::group_commit::{Batch, GroupCommitActor, GroupCommitMsg};
use super::queue_poller::QueuePollerMsg;
use super::{members, Role};
use crate::storage::BlobStore;
use crate::store::{NewQueuedCdr, Repository};

pub struct IntakeBatch {
    pub repo: Arc<dyn Repository>,
    pub raw_store: Arc<dyn BlobStore>,
    /// To find the QueuePoller to wake.
    pub instance: String,
}

pub type IntakeActor = GroupCommitActor<IntakeBatch>;
pub type IntakeMsg = GroupCommitMsg<IntakeBatch>;

#[async_trait]
impl Batch for IntakeBatch {
    type Item = NewQueuedCdr;
    type Output = ();
    const ROLE: Role = Role::Intake;

    async fn commit(&self, rows: &[NewQueuedCdr]) -> Vec<Result<(), String>> {
        let paths: Vec<String> = rows.iter().map(|r| r.path.clone()).collect();
        let result = match self.raw_store.sync(&paths).await {
            Err(e) => Err(format!("could not make the raw CDRs durable: {e}")),
            Ok(()) => self.repo.enqueue_cdrs(rows).await.map_err(|e| e.to_string()),
        };
        match &result {
            Ok(new) => {
                tracing::debug!(batch = rows.len(), new, "cdr_queue group commit");
                for poller in members::<QueuePollerMsg>(&self.instance, Role::QueuePoller) {
                    let _ = poller.send_message(QueuePollerMsg::Wake);
                }
            }
            Err(e) => tracing::error!(batch = rows.len(), "cdr_queue group commit failed: {e}"),
        }
        rows.iter().map(|_| result.as_ref().map(|_| ()).map_err(Clone::clone)).collect()
    }
}
