//! Group commit as an actor: callers `Submit` one item and wait; everything submitted while
//! a commit runs goes into the next one. Durable throughput then comes from one fsync and
//! one transaction per batch instead of one per CDR. Intake (`cdr_queue` rows) and the
//! committer (normalized CDRs) are both this actor with their own `Batch`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::mailbox::{Mailbox, Unreachable};
use crate::domain::outcome::{Classify, Retry};
use crate::events;
use crate::storage::StorageError;
use crate::store::StoreError;

/// Why an item was not committed. Shared by every item of the batch, so the errors keep
/// their type (and their classification) behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("{doing}: {source}")]
    Storage { doing: &'static str, source: Arc<StorageError> },
    #[error("{doing}: {source}")]
    Database { doing: &'static str, source: Arc<StoreError> },
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
}

impl CommitError {
    pub fn storage(doing: &'static str, e: StorageError) -> Self {
        CommitError::Storage { doing, source: Arc::new(e) }
    }

    pub fn database(doing: &'static str, e: StoreError) -> Self {
        CommitError::Database { doing, source: Arc::new(e) }
    }

    /// Whether the item may have been committed after all (the caller stopped waiting):
    /// nothing may be undone on that guess.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, CommitError::Unreachable(Unreachable::Timeout(..)))
            || matches!(self, CommitError::Database { source, .. } if matches!(**source, StoreError::TimedOut(_)))
    }
}

impl Classify for CommitError {
    fn retry(&self) -> Retry {
        match self {
            CommitError::Storage { source, .. } => source.retry(),
            CommitError::Database { source, .. } => source.retry(),
            CommitError::Unreachable(_) => Retry::Later,
        }
    }
}

/// What one kind of group commit does with a batch.
#[async_trait]
pub trait Batch: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;
    /// The `role` label of the group-commit metrics.
    const ROLE: &'static str;
    /// Commits the whole batch (one output per item, in order) or none of it.
    async fn commit(&self, items: &[Self::Item]) -> Result<Vec<Self::Output>, CommitError>;
}

type Reply<B> = RpcReplyPort<Result<<B as Batch>::Output, CommitError>>;

pub enum GroupCommitMsg<B: Batch> {
    Submit(B::Item, Reply<B>),
    /// Sent to itself, so it queues behind the submissions already waiting.
    Flush,
}

pub struct GroupCommitArgs<B> {
    pub batch: B,
    /// A batch this large is committed without waiting for the queued `Flush`.
    pub max_batch: usize,
}

pub struct GroupCommitState<B: Batch> {
    batch: B,
    max_batch: usize,
    pending: Vec<(B::Item, Reply<B>)>,
    flush_scheduled: bool,
}

pub struct GroupCommit<B>(PhantomData<fn() -> B>);

impl<B> Default for GroupCommit<B> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<B: Batch> Actor for GroupCommit<B> {
    type Msg = GroupCommitMsg<B>;
    type State = GroupCommitState<B>;
    type Arguments = GroupCommitArgs<B>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let GroupCommitArgs { batch, max_batch } = args;
        Ok(GroupCommitState { batch, max_batch, pending: Vec::new(), flush_scheduled: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GroupCommitMsg::Submit(item, reply) => {
                state.pending.push((item, reply));
                if state.pending.len() >= state.max_batch {
                    flush(state).await;
                } else if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    myself.send_message(GroupCommitMsg::Flush)?;
                }
            }
            GroupCommitMsg::Flush => {
                state.flush_scheduled = false;
                flush(state).await;
            }
        }
        Ok(())
    }

    /// A stop still commits what was submitted: its callers are waiting for an answer.
    async fn post_stop(&self, _: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        flush(state).await;
        Ok(())
    }
}

async fn flush<B: Batch>(state: &mut GroupCommitState<B>) {
    if state.pending.is_empty() {
        return;
    }
    let (items, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut state.pending).into_iter().unzip();
    let started = Instant::now();
    let result = state.batch.commit(&items).await;
    events::GroupCommitted { role: B::ROLE, batch: items.len(), elapsed: started.elapsed() }.emit();
    match result {
        Ok(outputs) if outputs.len() == items.len() => {
            for (reply, output) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(output));
            }
        }
        Ok(_) => unreachable!("a Batch answers one output per item"),
        // One item the database refuses must not fail the others of its batch: each is
        // committed on its own, so only the culprit gets the permanent error.
        Err(e) if !e.is_retriable() && items.len() > 1 => {
            tracing::warn!(role = B::ROLE, batch = items.len(), "batch refused ({e}); committing its items one by one");
            for (item, reply) in items.into_iter().zip(replies) {
                let one = state.batch.commit(std::slice::from_ref(&item)).await;
                let _ = reply.send(one.map(|mut v| v.remove(0)));
            }
        }
        Err(e) => {
            tracing::error!(role = B::ROLE, batch = items.len(), "group commit failed: {e}");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Submits one item and waits for the batch it went into, at most `timeout`.
pub async fn submit<B: Batch>(
    to: &Mailbox<GroupCommitMsg<B>>,
    item: B::Item,
    timeout: Duration,
) -> Result<B::Output, CommitError> {
    to.call(|reply| GroupCommitMsg::Submit(item, reply), timeout).await?
}
