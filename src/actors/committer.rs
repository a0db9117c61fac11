//! Committer: the distilleries' group commit. Each distillery hands over a prepared CDR (its
//! normalized XML written) and waits; one batch syncs the XML directories, then inserts every
//! `normalized_cdrs` row and its tasks and marks the queue rows done in one transaction.

use std::sync::Arc;

use async_trait::async_trait;

use super::group_commit::{Batch, CommitError, GroupCommit, GroupCommitMsg};
use super::mailbox::Mailbox;
use super::poller::PollerMsg;
use crate::storage::BlobStore;
use crate::store::{CommitResult, NewNormalizedCdr, Repository};

/// A CDR ready to commit: its normalized XML is written (not yet synced).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub cdr_id: u64,
    pub row: NewNormalizedCdr,
}

pub struct NormalizedBatch {
    pub repo: Arc<dyn Repository>,
    pub ncdr_store: Arc<dyn BlobStore>,
    /// This process's TaskPoller, when it runs the tasks role.
    pub wake: Option<Mailbox<PollerMsg>>,
}

pub type Committer = GroupCommit<NormalizedBatch>;
pub type CommitterMsg = GroupCommitMsg<NormalizedBatch>;

#[async_trait]
impl Batch for NormalizedBatch {
    type Item = Prepared;
    type Output = CommitResult;
    const ROLE: &'static str = "committer";

    async fn commit(&self, items: &[Prepared]) -> Result<Vec<CommitResult>, CommitError> {
        let results = commit_prepared(&*self.repo, &*self.ncdr_store, items).await?;
        let new_tasks = results
            .iter()
            .zip(items)
            .any(|(r, p)| matches!(r, CommitResult::Committed { .. }) && !p.row.tasks.is_empty());
        if let (true, Some(poller)) = (new_tasks, &self.wake) {
            let _ = poller.send(PollerMsg::Wake);
        }
        Ok(results)
    }
}

/// Syncs the batch's normalized XML, then commits its rows in one transaction.
pub async fn commit_prepared(
    repo: &dyn Repository,
    ncdr_store: &dyn BlobStore,
    items: &[Prepared],
) -> Result<Vec<CommitResult>, CommitError> {
    let locations: Vec<String> = items.iter().map(|p| p.row.path.clone()).collect();
    ncdr_store.sync(&locations).await.map_err(|e| CommitError::storage("making normalized CDRs durable", e))?;
    let batch: Vec<(u64, NewNormalizedCdr)> = items.iter().map(|p| (p.cdr_id, p.row.clone())).collect();
    repo.commit_normalized(&batch, chrono::Utc::now())
        .await
        .map_err(|e| CommitError::database("committing normalized CDRs", e))
}
