//! DistillerSupervisor: owns the QueuePoller and the distillery pool. A dead distillery is
//! reported to the poller at once (its CDR is an internal failure) and replaced after a
//! backoff; too many deaths in a window escalate to the root.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::policy::{Decision, RestartPolicy, RestartTracker};
use crate::actors::distillery::{Distillery, DistilleryContext, DistilleryMsg};
use crate::actors::queue_poller::{QueuePoller, QueuePollerArgs, QueuePollerMsg};

pub enum DistillerSupervisorMsg {
    RestartDistillery,
    RestartPoller,
    /// Graceful stop: the poller drains (bounded by the timeout), then the children stop.
    Drain(Duration, RpcReplyPort<()>),
}

pub struct DistillerSupervisorArgs {
    pub ctx: Arc<DistilleryContext>,
    pub instance: String,
    pub policy: RestartPolicy,
}

pub struct DistillerSupervisorState {
    args: DistillerSupervisorArgs,
    poller: Option<ActorRef<QueuePollerMsg>>,
    distilleries: Vec<ActorRef<DistilleryMsg>>,
    tracker: RestartTracker,
    shutting_down: bool,
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
        let mut distilleries = Vec::new();
        for _ in 0..args.ctx.config.distilleries {
            distilleries.push(spawn_distillery(&args, myself.get_cell()).await?);
        }
        let tracker = RestartTracker::new(args.policy);
        let mut state = DistillerSupervisorState { args, poller: None, distilleries, tracker, shutting_down: false };
        state.poller = Some(spawn_poller(&state, myself.get_cell()).await?);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DistillerSupervisorMsg::RestartDistillery if !state.shutting_down => {
                let d = spawn_distillery(&state.args, myself.get_cell()).await?;
                state.distilleries.push(d.clone());
                if let Some(p) = &state.poller {
                    let _ = p.send_message(QueuePollerMsg::DistilleryUp(d));
                }
            }
            DistillerSupervisorMsg::RestartPoller if !state.shutting_down => {
                state.poller = Some(spawn_poller(state, myself.get_cell()).await?);
            }
            DistillerSupervisorMsg::Drain(timeout, reply) => {
                state.shutting_down = true;
                if let Some(p) = &state.poller {
                    let drained = p.call(QueuePollerMsg::Drain, Some(timeout)).await;
                    if !matches!(drained, Ok(ractor::rpc::CallResult::Success(()))) {
                        tracing::warn!("distilleries did not finish within {timeout:?}; their leases will expire");
                    }
                }
                for child in myself.get_children() {
                    child.stop(Some("shutdown".into()));
                }
                let _ = reply.send(());
            }
            _ => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason.unwrap_or_else(|| "stopped".into())),
            _ => return Ok(()),
        };
        if state.shutting_down {
            return Ok(());
        }
        let id = cell.get_id();
        let was_distillery = state.distilleries.iter().any(|d| d.get_id() == id);
        let was_poller = state.poller.as_ref().is_some_and(|p| p.get_id() == id);
        if !was_distillery && !was_poller {
            return Ok(());
        }
        let delay = match state.tracker.on_failure(Instant::now()) {
            Decision::RestartAfter(d) => d,
            Decision::Escalate => {
                return Err(format!("restart intensity exceeded ({reason}); escalating").into());
            }
        };
        if was_distillery {
            state.distilleries.retain(|d| d.get_id() != id);
            tracing::error!(actor = %id, "distillery died: {reason}; restarting in {delay:?}");
            if let Some(p) = &state.poller {
                let _ = p.send_message(QueuePollerMsg::DistilleryDown { id, reason });
            }
            myself.send_after(delay, || DistillerSupervisorMsg::RestartDistillery);
        } else {
            tracing::error!(actor = %id, "queue poller died: {reason}; restarting in {delay:?}");
            state.poller = None;
            myself.send_after(delay, || DistillerSupervisorMsg::RestartPoller);
        }
        Ok(())
    }
}

async fn spawn_distillery(
    args: &DistillerSupervisorArgs,
    sup: ActorCell,
) -> Result<ActorRef<DistilleryMsg>, ActorProcessingErr> {
    let (d, _) = Actor::spawn_linked(None, Distillery, args.ctx.clone(), sup).await?;
    Ok(d)
}

async fn spawn_poller(
    state: &DistillerSupervisorState,
    sup: ActorCell,
) -> Result<ActorRef<QueuePollerMsg>, ActorProcessingErr> {
    let args = QueuePollerArgs {
        ctx: state.args.ctx.clone(),
        instance: state.args.instance.clone(),
        distilleries: state.distilleries.clone(),
    };
    let (p, _) = Actor::spawn_linked(None, QueuePoller, args, sup).await?;
    Ok(p)
}
