//! DistillerSupervisor: owns the QueuePoller, the Committer and the distillery pool. A dead
//! distillery is reported to the poller at once (its CDR is an internal failure) and replaced
//! after a backoff; too many deaths in a window escalate to the root.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::policy::{RestartPolicy, RestartTracker};
use super::{child_failure, restart_delay};
use crate::actors::committer::{Committer, CommitterMsg, NormalizedBatch};
use crate::actors::distillery::{Distillery, DistilleryContext, DistilleryMsg};
use crate::actors::group_commit::GroupCommitArgs;
use crate::actors::queue_poller::{QueuePoller, QueuePollerArgs, QueuePollerMsg};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Distillery,
    Poller,
    Committer,
}

pub enum DistillerSupervisorMsg {
    Restart(Child),
    /// Graceful stop: the poller drains (bounded by the timeout), then the children stop.
    Drain(Duration, RpcReplyPort<()>),
}

pub struct DistillerSupervisorArgs {
    pub ctx: Arc<DistilleryContext>,
    pub policy: RestartPolicy,
}

pub struct DistillerSupervisorState {
    args: DistillerSupervisorArgs,
    poller: Option<ActorRef<QueuePollerMsg>>,
    committer: Option<ActorRef<CommitterMsg>>,
    distilleries: Vec<ActorRef<DistilleryMsg>>,
    tracker: RestartTracker,
    shutting_down: bool,
}

impl DistillerSupervisorState {
    fn child_kind(&self, id: ActorId) -> Option<Child> {
        if self.distilleries.iter().any(|d| d.get_id() == id) {
            Some(Child::Distillery)
        } else if self.poller.as_ref().is_some_and(|p| p.get_id() == id) {
            Some(Child::Poller)
        } else if self.committer.as_ref().is_some_and(|c| c.get_id() == id) {
            Some(Child::Committer)
        } else {
            None
        }
    }

    async fn spawn(&mut self, child: Child, sup: ActorCell) -> Result<(), ActorProcessingErr> {
        let ctx = self.args.ctx.clone();
        match child {
            Child::Distillery => {
                let (d, _) = Actor::spawn_linked(None, Distillery, ctx, sup).await?;
                if let Some(p) = &self.poller {
                    let _ = p.send_message(QueuePollerMsg::DistilleryUp(d.clone()));
                }
                self.distilleries.push(d);
            }
            Child::Poller => {
                let args = QueuePollerArgs { ctx, distilleries: self.distilleries.clone() };
                self.poller = Some(Actor::spawn_linked(None, QueuePoller, args, sup).await?.0);
            }
            Child::Committer => {
                let batch = NormalizedBatch {
                    repo: ctx.repo.clone(),
                    ncdr_store: ctx.ncdr_store.clone(),
                    instance: ctx.instance.clone(),
                };
                // every distillery waits on at most one commit
                let args = GroupCommitArgs {
                    batch,
                    instance: ctx.instance.clone(),
                    max_batch: ctx.config.distilleries.max(1),
                };
                self.committer = Some(Actor::spawn_linked(None, Committer::default(), args, sup).await?.0);
            }
        }
        Ok(())
    }
}

pub struct DistillerSupervisor;

impl Actor for DistillerSupervisor {
    type Msg = DistillerSupervisorMsg;
    type State = DistillerSupervisorState;
    type Arguments = DistillerSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let tracker = RestartTracker::new(args.policy);
        let n = args.ctx.config.distilleries;
        let mut state = DistillerSupervisorState {
            args,
            poller: None,
            committer: None,
            distilleries: Vec::new(),
            tracker,
            shutting_down: false,
        };
        state.spawn(Child::Committer, myself.get_cell()).await?;
        for _ in 0..n {
            state.spawn(Child::Distillery, myself.get_cell()).await?;
        }
        state.spawn(Child::Poller, myself.get_cell()).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DistillerSupervisorMsg::Restart(child) if !state.shutting_down => {
                state.spawn(child, myself.get_cell()).await?
            }
            DistillerSupervisorMsg::Restart(_) => {}
            DistillerSupervisorMsg::Drain(timeout, reply) => {
                state.shutting_down = true;
                if let Some(p) = &state.poller {
                    let drained = p.call(QueuePollerMsg::Drain, Some(timeout)).await;
                    if !matches!(drained, Ok(ractor::rpc::CallResult::Success(()))) {
                        tracing::warn!("distilleries did not finish within {timeout:?}; their leases will expire");
                    }
                }
                for d in &state.distilleries {
                    d.stop(Some("shutdown".into()));
                }
                if let Some(p) = &state.poller {
                    p.stop(Some("shutdown".into()));
                }
                // last, so commits the distilleries are waiting on still get done
                if let Some(c) = &state.committer {
                    let _ = c.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10))).await;
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((id, reason)) = child_failure(evt) else { return Ok(()) };
        if state.shutting_down {
            return Ok(());
        }
        let Some(child) = state.child_kind(id) else { return Ok(()) };
        let label = format!("{child:?}").to_ascii_lowercase();
        let delay = restart_delay(&mut state.tracker, id, &format!("{child:?}"), label, &reason)?;
        match child {
            Child::Distillery => {
                state.distilleries.retain(|d| d.get_id() != id);
                if let Some(p) = &state.poller {
                    let _ = p.send_message(QueuePollerMsg::DistilleryDown { id, reason });
                }
            }
            Child::Poller => state.poller = None,
            Child::Committer => state.committer = None,
        }
        myself.send_after(delay, move || DistillerSupervisorMsg::Restart(child));
        Ok(())
    }
}
