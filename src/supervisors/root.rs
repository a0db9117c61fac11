//! RootSupervisor: the intake actor, the distiller subtree and the queue-metrics actor. A
//! child that fails is restarted under `RestartPolicy::SUBTREES`; past that the root stops
//! with a reason and the process exits non-zero, leaving the restart to systemd/ECS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::child_failure;
use super::distiller::{DistillerSupervisor, DistillerSupervisorArgs, DistillerSupervisorMsg};
use super::policy::{Decision, RestartPolicy, RestartTracker};
use super::tasks::{TaskSupervisor, TaskSupervisorArgs, TaskSupervisorMsg};
use crate::actors::distillery::DistilleryContext;
use crate::actors::group_commit::GroupCommitArgs;
use crate::actors::intake::{IntakeActor, IntakeBatch, IntakeMsg};
use crate::actors::queue_metrics::{QueueMetrics, QueueMetricsArgs, Refresh};
use crate::actors::task_executor::TaskContext;
use crate::storage::BlobStore;
use crate::store::Repository;

/// How often the queue gauges are refreshed from the database.
pub const METRICS_REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Intake,
    Distiller,
    Tasks,
    Metrics,
}

pub enum RootMsg {
    Restart(Child),
    /// Orderly stop after the HTTP listener has closed: drain distilleries, flush intake.
    Shutdown(Duration, RpcReplyPort<()>),
}

pub struct RootArgs {
    pub repo: Arc<dyn Repository>,
    pub raw_store: Arc<dyn BlobStore>,
    pub instance: String,
    pub intake_batch: usize,
    /// False when this process runs no intake role.
    pub intake: bool,
    /// None when this process runs no distiller role.
    pub distillery: Option<Arc<DistilleryContext>>,
    /// None when this process runs no tasks role.
    pub tasks: Option<Arc<TaskContext>>,
}

pub struct RootState {
    args: RootArgs,
    intake: Option<ActorRef<IntakeMsg>>,
    distiller: Option<ActorRef<DistillerSupervisorMsg>>,
    tasks: Option<ActorRef<TaskSupervisorMsg>>,
    metrics: Option<ActorRef<Refresh>>,
    tracker: RestartTracker,
    shutting_down: bool,
}

impl RootState {
    fn child_kind(&self, id: ActorId) -> Option<Child> {
        let is = |cell: Option<ActorCell>| cell.is_some_and(|c| c.get_id() == id);
        if is(self.intake.as_ref().map(|a| a.get_cell())) {
            Some(Child::Intake)
        } else if is(self.distiller.as_ref().map(|a| a.get_cell())) {
            Some(Child::Distiller)
        } else if is(self.tasks.as_ref().map(|a| a.get_cell())) {
            Some(Child::Tasks)
        } else if is(self.metrics.as_ref().map(|a| a.get_cell())) {
            Some(Child::Metrics)
        } else {
            None
        }
    }

    async fn spawn(&mut self, child: Child, sup: ActorCell) -> Result<(), ActorProcessingErr> {
        let a = &self.args;
        match child {
            Child::Intake if !a.intake => {}
            Child::Intake => {
                let batch =
                    IntakeBatch { repo: a.repo.clone(), raw_store: a.raw_store.clone(), instance: a.instance.clone() };
                let args = GroupCommitArgs { batch, instance: a.instance.clone(), max_batch: a.intake_batch };
                self.intake = Some(Actor::spawn_linked(None, IntakeActor::default(), args, sup).await?.0);
            }
            Child::Distiller => {
                if let Some(ctx) = &a.distillery {
                    let args = DistillerSupervisorArgs { ctx: ctx.clone(), policy: RestartPolicy::WORKERS };
                    self.distiller = Some(Actor::spawn_linked(None, DistillerSupervisor, args, sup).await?.0);
                }
            }
            Child::Tasks => {
                if let Some(ctx) = &a.tasks {
                    let args = TaskSupervisorArgs { ctx: ctx.clone(), policy: RestartPolicy::WORKERS };
                    self.tasks = Some(Actor::spawn_linked(None, TaskSupervisor, args, sup).await?.0);
                }
            }
            Child::Metrics => {
                let args = QueueMetricsArgs { repo: a.repo.clone(), interval: METRICS_REFRESH };
                self.metrics = Some(Actor::spawn_linked(None, QueueMetrics, args, sup).await?.0);
            }
        }
        Ok(())
    }
}

pub struct RootSupervisor;

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(&self, myself: ActorRef<RootMsg>, args: RootArgs) -> Result<RootState, ActorProcessingErr> {
        let tracker = RestartTracker::new(RestartPolicy::SUBTREES);
        let mut state = RootState {
            args,
            intake: None,
            distiller: None,
            tasks: None,
            metrics: None,
            tracker,
            shutting_down: false,
        };
        for child in [Child::Intake, Child::Distiller, Child::Tasks, Child::Metrics] {
            state.spawn(child, myself.get_cell()).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Restart(child) if !state.shutting_down => state.spawn(child, myself.get_cell()).await?,
            RootMsg::Restart(_) => {}
            RootMsg::Shutdown(drain, reply) => {
                state.shutting_down = true;
                if let Some(m) = &state.metrics {
                    m.stop(Some("shutdown".into()));
                }
                if let Some(d) = &state.distiller {
                    let _ =
                        d.call(|r| DistillerSupervisorMsg::Drain(drain, r), Some(drain + Duration::from_secs(5))).await;
                    let _ = d.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
                }
                if let Some(t) = &state.tasks {
                    let _ = t.call(|r| TaskSupervisorMsg::Drain(drain, r), Some(drain + Duration::from_secs(5))).await;
                    let _ = t.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
                }
                if let Some(i) = &state.intake {
                    // post_stop commits anything still pending before the actor goes.
                    let _ = i.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10))).await;
                }
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        evt: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((id, reason)) = child_failure(evt) else { return Ok(()) };
        if state.shutting_down {
            return Ok(());
        }
        let Some(child) = state.child_kind(id) else { return Ok(()) };
        match state.tracker.on_failure(Instant::now()) {
            Decision::RestartAfter(delay) => {
                tracing::error!(actor = %id, "{child:?} died: {reason}; restarting in {delay:?}");
                metrics::counter!(crate::telemetry::RESTARTS, "actor" => format!("{child:?}").to_ascii_lowercase())
                    .increment(1);
                match child {
                    Child::Intake => state.intake = None,
                    Child::Distiller => state.distiller = None,
                    Child::Tasks => state.tasks = None,
                    Child::Metrics => state.metrics = None,
                }
                myself.send_after(delay, move || RootMsg::Restart(child));
            }
            Decision::Escalate => {
                tracing::error!("root restart intensity exceeded ({reason}); stopping");
                myself.stop(Some(format!("fatal: {reason}")));
            }
        }
        Ok(())
    }
}
