//! TaskSupervisor: the TaskPoller and one TaskExecutor per configured task type. A dead
//! executor is restarted after a backoff (its attempts in flight finish on their own and
//! its semaphore is kept, so concurrency stays bounded); too many deaths escalate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Semaphore;

use super::policy::{RestartPolicy, RestartTracker};
use super::{child_failure, restart_delay};
use crate::actors::task_executor::{ExecutorArgs, ExecutorMsg, TaskContext, TaskExecutor};
use crate::actors::task_poller::{TaskPoller, TaskPollerMsg};
use crate::domain::tasks::TaskType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Poller,
    Executor(TaskType),
}

impl Child {
    /// The `actor` label of the restart counter.
    fn label(self) -> String {
        match self {
            Child::Poller => "task_poller".into(),
            Child::Executor(t) => format!("executor_{t}"),
        }
    }
}

pub enum TaskSupervisorMsg {
    Restart(Child),
    Drain(Duration, RpcReplyPort<()>),
}

pub struct TaskSupervisorArgs {
    pub ctx: Arc<TaskContext>,
    pub policy: RestartPolicy,
}

pub struct TaskSupervisorState {
    args: TaskSupervisorArgs,
    poller: Option<ActorRef<TaskPollerMsg>>,
    executors: HashMap<TaskType, ActorRef<ExecutorMsg>>,
    slots: HashMap<TaskType, Arc<Semaphore>>,
    tracker: RestartTracker,
    shutting_down: bool,
}

impl TaskSupervisorState {
    fn child_kind(&self, id: ActorId) -> Option<Child> {
        if self.poller.as_ref().is_some_and(|p| p.get_id() == id) {
            return Some(Child::Poller);
        }
        self.executors.iter().find(|(_, a)| a.get_id() == id).map(|(t, _)| Child::Executor(*t))
    }

    async fn spawn(&mut self, child: Child, sup: ActorCell) -> Result<(), ActorProcessingErr> {
        let ctx = self.args.ctx.clone();
        match child {
            Child::Poller => self.poller = Some(Actor::spawn_linked(None, TaskPoller, ctx, sup).await?.0),
            Child::Executor(task_type) => {
                let threads = ctx.config.threads;
                let slots = self.slots.entry(task_type).or_insert_with(|| Arc::new(Semaphore::new(threads))).clone();
                let args = ExecutorArgs { ctx, task_type, slots };
                let (a, _) = Actor::spawn_linked(None, TaskExecutor, args, sup).await?;
                self.executors.insert(task_type, a);
            }
        }
        Ok(())
    }
}

pub struct TaskSupervisor;

impl Actor for TaskSupervisor {
    type Msg = TaskSupervisorMsg;
    type State = TaskSupervisorState;
    type Arguments = TaskSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let tracker = RestartTracker::new(args.policy);
        let mut types: Vec<TaskType> = args.ctx.handlers.keys().copied().collect();
        types.sort();
        let mut state = TaskSupervisorState {
            args,
            poller: None,
            executors: HashMap::new(),
            slots: HashMap::new(),
            tracker,
            shutting_down: false,
        };
        for t in types {
            state.spawn(Child::Executor(t), myself.get_cell()).await?;
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
            TaskSupervisorMsg::Restart(child) if !state.shutting_down => state.spawn(child, myself.get_cell()).await?,
            TaskSupervisorMsg::Restart(_) => {}
            TaskSupervisorMsg::Drain(timeout, reply) => {
                state.shutting_down = true;
                if let Some(p) = &state.poller {
                    let drained = p.call(TaskPollerMsg::Drain, Some(timeout)).await;
                    if !matches!(drained, Ok(ractor::rpc::CallResult::Success(()))) {
                        tracing::warn!("tasks still running after {timeout:?}; their leases will expire");
                    }
                    p.stop(Some("shutdown".into()));
                }
                for e in state.executors.values() {
                    e.stop(Some("shutdown".into()));
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
        let delay = restart_delay(&mut state.tracker, id, &format!("{child:?}"), child.label(), &reason)?;
        match child {
            Child::Poller => state.poller = None,
            Child::Executor(t) => {
                state.executors.remove(&t);
            }
        }
        myself.send_after(delay, move || TaskSupervisorMsg::Restart(child));
        Ok(())
    }
}
