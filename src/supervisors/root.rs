//! RootSupervisor: the intake actor and the distiller subtree. A child that fails is
//! restarted under `RestartPolicy::SUBTREES`; past that the root stops with a reason and
//! the process exits non-zero, leaving the restart to systemd/ECS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::distiller::{DistillerSupervisor, DistillerSupervisorArgs, DistillerSupervisorMsg};
use super::policy::{Decision, RestartPolicy, RestartTracker};
use crate::actors::distillery::DistilleryContext;
use crate::actors::group_commit::GroupCommitArgs;
use crate::actors::intake::{IntakeActor, IntakeBatch, IntakeMsg};
use crate::storage::BlobStore;
use crate::store::Repository;

pub enum RootMsg {
    RestartIntake,
    RestartDistiller,
    /// Orderly stop after the HTTP listener has closed: drain distilleries, flush intake.
    Shutdown(Duration, RpcReplyPort<()>),
}

pub struct RootArgs {
    pub repo: Arc<dyn Repository>,
    pub raw_store: Arc<dyn BlobStore>,
    pub instance: String,
    pub intake_batch: usize,
    /// None when this process runs no distiller role.
    pub distillery: Option<Arc<DistilleryContext>>,
}

pub struct RootState {
    args: RootArgs,
    intake: Option<ActorRef<IntakeMsg>>,
    distiller: Option<ActorRef<DistillerSupervisorMsg>>,
    tracker: RestartTracker,
    shutting_down: bool,
}

pub struct RootSupervisor;

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(&self, myself: ActorRef<RootMsg>, args: RootArgs) -> Result<RootState, ActorProcessingErr> {
        let mut state = RootState {
            args,
            intake: None,
            distiller: None,
            tracker: RestartTracker::new(RestartPolicy::SUBTREES),
            shutting_down: false,
        };
        state.intake = Some(spawn_intake(&state, &myself).await?);
        state.distiller = spawn_distiller(&state, &myself).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::RestartIntake if !state.shutting_down => state.intake = Some(spawn_intake(state, &myself).await?),
            RootMsg::RestartDistiller if !state.shutting_down => {
                state.distiller = spawn_distiller(state, &myself).await?
            }
            RootMsg::Shutdown(drain, reply) => {
                state.shutting_down = true;
                if let Some(d) = &state.distiller {
                    let _ =
                        d.call(|r| DistillerSupervisorMsg::Drain(drain, r), Some(drain + Duration::from_secs(5))).await;
                    let _ = d.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
                }
                if let Some(i) = &state.intake {
                    // post_stop commits anything still pending before the actor goes.
                    let _ = i.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10))).await;
                }
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
            _ => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        evt: SupervisionEvent,
        state: &mut RootState,
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
        let is_intake = state.intake.as_ref().is_some_and(|a| a.get_id() == id);
        let is_distiller = state.distiller.as_ref().is_some_and(|a| a.get_id() == id);
        if !is_intake && !is_distiller {
            return Ok(());
        }
        match state.tracker.on_failure(Instant::now()) {
            Decision::RestartAfter(delay) => {
                tracing::error!(actor = %id, "{} died: {reason}; restarting in {delay:?}", if is_intake { "intake" } else { "distiller subtree" });
                if is_intake {
                    state.intake = None;
                    myself.send_after(delay, || RootMsg::RestartIntake);
                } else {
                    state.distiller = None;
                    myself.send_after(delay, || RootMsg::RestartDistiller);
                }
                Ok(())
            }
            Decision::Escalate => {
                tracing::error!("root restart intensity exceeded ({reason}); stopping");
                myself.stop(Some(format!("fatal: {reason}")));
                Ok(())
            }
        }
    }
}

async fn spawn_intake(
    state: &RootState,
    myself: &ActorRef<RootMsg>,
) -> Result<ActorRef<IntakeMsg>, ActorProcessingErr> {
    let a = &state.args;
    let batch = IntakeBatch { repo: a.repo.clone(), raw_store: a.raw_store.clone(), instance: a.instance.clone() };
    let args = GroupCommitArgs { batch, instance: a.instance.clone(), max_batch: a.intake_batch };
    Ok(Actor::spawn_linked(None, IntakeActor::default(), args, myself.get_cell()).await?.0)
}

async fn spawn_distiller(
    state: &RootState,
    myself: &ActorRef<RootMsg>,
) -> Result<Option<ActorRef<DistillerSupervisorMsg>>, ActorProcessingErr> {
    let Some(ctx) = &state.args.distillery else {
        return Ok(None);
    };
    let args = DistillerSupervisorArgs { ctx: ctx.clone(), policy: RestartPolicy::WORKERS };
    Ok(Some(Actor::spawn_linked(None, DistillerSupervisor, args, myself.get_cell()).await?.0))
}
