//! Committer: the distilleries' group commit. Each distillery hands over a prepared CDR (its
//! normalized XML written) and waits; one batch syncs the XML directories, then inserts every
//! `normalized_cdrs` row and its tasks and marks the queue rows done in one transaction.

use std::sync::Arc;

use async_trait::async_trait;

use super::group_commit::{Batch, GroupCommitActor, GroupCommitMsg};
use super::task_poller::TaskPollerMsg;
use super::Role;
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
    /// To wake this instance's TaskPoller once tasks are committed.
    pub instance: String,
}

pub type Committer = GroupCommitActor<NormalizedBatch>;
pub type CommitterMsg = GroupCommitMsg<NormalizedBatch>;

#[async_trait]
impl Batch for NormalizedBatch {
    type Item = Prepared;
    type Output = CommitResult;
    const ROLE: Role = Role::Committer;

    async fn commit(&self, items: &[Prepared]) -> Vec<Result<CommitResult, String>> {
        let results = commit_prepared(&*self.repo, &*self.ncdr_store, items).await;
        let new_tasks = results
            .iter()
            .zip(items)
            .any(|(r, p)| matches!(r, Ok(CommitResult::Committed { .. })) && !p.row.tasks.is_empty());
        if new_tasks {
            for poller in super::members::<TaskPollerMsg>(&self.instance, Role::TaskPoller) {
                let _ = poller.send_message(TaskPollerMsg::Wake);
            }
        }
        results
    }
}

/// Syncs the batch's normalized XML, then commits its rows in one transaction.
pub async fn commit_prepared(
    repo: &dyn Repository,
    ncdr_store: &dyn BlobStore,
    items: &[Prepared],
) -> Vec<Result<CommitResult, String>> {
    let locations: Vec<String> = items.iter().map(|p| p.row.path.clone()).collect();
    let result = match ncdr_store.sync(&locations).await {
        Err(e) => Err(format!("making normalized CDRs durable: {e}")),
        Ok(()) => {
            let batch: Vec<(u64, NewNormalizedCdr)> = items.iter().map(|p| (p.cdr_id, p.row.clone())).collect();
            repo.commit_normalized(&batch, super::now()).await.map_err(|e| format!("committing normalized CDRs: {e}"))
        }
    };
    match result {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) => items.iter().map(|_| Err(e.clone())).collect(),
    }
}
