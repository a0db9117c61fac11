//! IntakeActor: group commit of `cdr_queue` rows. HTTP handlers have already written the raw
//! CDR durably; they send `Submit` and answer FreeSWITCH only when the reply says the row is
//! committed. Everything that arrives while one commit runs goes into the next transaction.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::queue_poller::QueuePollerMsg;
use super::{join, members, Role};
use crate::store::{NewQueuedCdr, Repository};

pub enum IntakeMsg {
    /// Queue one CDR; the reply carries the database error text when the commit failed.
    Submit(NewQueuedCdr, RpcReplyPort<Result<(), String>>),
    /// Commit what is pending. Sent to itself, so it queues behind submissions already waiting.
    Flush,
}

pub struct IntakeArgs {
    pub repo: Arc<dyn Repository>,
    pub instance: String,
    pub max_batch: usize,
}

pub struct IntakeState {
    args: IntakeArgs,
    pending: Vec<(NewQueuedCdr, RpcReplyPort<Result<(), String>>)>,
    flush_scheduled: bool,
}

pub struct IntakeActor;

impl Actor for IntakeActor {
    type Msg = IntakeMsg;
    type State = IntakeState;
    type Arguments = IntakeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<IntakeMsg>,
        args: IntakeArgs,
    ) -> Result<IntakeState, ActorProcessingErr> {
        join(&args.instance, Role::Intake, myself.get_cell());
        Ok(IntakeState { args, pending: Vec::new(), flush_scheduled: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<IntakeMsg>,
        msg: IntakeMsg,
        state: &mut IntakeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            IntakeMsg::Submit(row, reply) => {
                state.pending.push((row, reply));
                if state.pending.len() >= state.args.max_batch {
                    flush(state).await;
                } else if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    myself.send_message(IntakeMsg::Flush)?;
                }
            }
            IntakeMsg::Flush => {
                state.flush_scheduled = false;
                flush(state).await;
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<IntakeMsg>, state: &mut IntakeState) -> Result<(), ActorProcessingErr> {
        flush(state).await;
        Ok(())
    }
}

/// One transaction for everything pending; every submitter gets the same answer.
async fn flush(state: &mut IntakeState) {
    if state.pending.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut state.pending);
    let rows: Vec<NewQueuedCdr> = batch.iter().map(|(r, _)| r.clone()).collect();
    let result = state.args.repo.enqueue_cdrs(&rows).await;
    match &result {
        Ok(new) => tracing::debug!(batch = rows.len(), new, "cdr_queue group commit"),
        Err(e) => tracing::error!(batch = rows.len(), error = %e, "cdr_queue group commit failed"),
    }
    let answer = result.map(|_| ()).map_err(|e| e.to_string());
    for (_, reply) in batch {
        let _ = reply.send(answer.clone());
    }
    if answer.is_ok() {
        for poller in members::<QueuePollerMsg>(&state.args.instance, Role::QueuePoller) {
            let _ = poller.send_message(QueuePollerMsg::Wake);
        }
    }
}
