//! Group commit as an actor: callers `Submit` one item and wait; everything submitted while
//! a commit runs goes into the next one. Durable throughput then comes from one fsync per
//! batch instead of one per CDR. Intake and the normalized-CDR committer are both this
//! actor with their own `Batch`.

use std::marker::PhantomData;

use async_trait::async_trait;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{join, Role};

/// What one kind of group commit does with a batch.
#[async_trait]
pub trait Batch: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;
    /// The group under which callers find this actor.
    const ROLE: Role;
    /// Commits the batch and answers every item, in order. An `Err` is the reason the item
    /// was not committed (the database or storage failed), never a panic.
    async fn commit(&self, items: &[Self::Item]) -> Vec<Result<Self::Output, String>>;
}

/// Where one submitter waits for its item's answer.
type Reply<B> = RpcReplyPort<Result<<B as Batch>::Output, String>>;

pub enum GroupCommitMsg<B: Batch> {
    Submit(B::Item, Reply<B>),
    /// Sent to itself, so it queues behind the submissions already waiting.
    Flush,
}

pub struct GroupCommitArgs<B> {
    pub batch: B,
    /// The running instance whose callers find this actor.
    pub instance: String,
    /// A batch this large is committed without waiting for the queued `Flush`.
    pub max_batch: usize,
}

pub struct GroupCommitState<B: Batch> {
    batch: B,
    max_batch: usize,
    pending: Vec<(B::Item, Reply<B>)>,
    flush_scheduled: bool,
}

pub struct GroupCommitActor<B>(PhantomData<fn() -> B>);

impl<B> Default for GroupCommitActor<B> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<B: Batch> Actor for GroupCommitActor<B> {
    type Msg = GroupCommitMsg<B>;
    type State = GroupCommitState<B>;
    type Arguments = GroupCommitArgs<B>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        join(&args.instance, B::ROLE, myself.get_cell());
        Ok(GroupCommitState {
            batch: args.batch,
            max_batch: args.max_batch,
            pending: Vec::new(),
            flush_scheduled: false,
        })
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
    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        flush(state).await;
        Ok(())
    }
}

async fn flush<B: Batch>(state: &mut GroupCommitState<B>) {
    if state.pending.is_empty() {
        return;
    }
    let (items, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut state.pending).into_iter().unzip();
    let started = std::time::Instant::now();
    let mut results = state.batch.commit(&items).await.into_iter();
    let role = format!("{:?}", B::ROLE).to_ascii_lowercase();
    metrics::histogram!(crate::telemetry::GROUP_COMMIT_SECONDS, "role" => role.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(crate::telemetry::GROUP_COMMIT_BATCH, "role" => role).record(items.len() as f64);
    tracing::trace!(role = ?B::ROLE, batch = items.len(), elapsed_us = started.elapsed().as_micros() as u64, "group commit");
    for reply in replies {
        let answer = results.next().unwrap_or_else(|| Err("batch answered fewer items than it got".into()));
        let _ = reply.send(answer);
    }
}

/// Submits one item to the group-commit actor of `B::ROLE` in `instance` and waits.
pub async fn submit<B: Batch>(
    instance: &str,
    item: B::Item,
    timeout: std::time::Duration,
) -> Result<B::Output, String> {
    let actor = super::members::<GroupCommitMsg<B>>(instance, B::ROLE)
        .into_iter()
        .next()
        .ok_or_else(|| format!("{:?} is restarting", B::ROLE))?;
    match actor.call(|reply| GroupCommitMsg::Submit(item, reply), Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(answer)) => answer,
        Ok(ractor::rpc::CallResult::Timeout) => Err(format!("{:?} did not answer within {timeout:?}", B::ROLE)),
        _ => Err(format!("{:?} is restarting", B::ROLE)),
    }
}
