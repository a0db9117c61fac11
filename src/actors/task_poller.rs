//! TaskPoller: claims due tasks per type (`idx_type_done_next`) under a lease and hands them
//! to that type's executor, never more than it has room for. Woken by the distilleries'
//! commits, and by a timer (`tasksd.poll_interval_seconds`) for retries coming due.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::task_executor::{ExecutorMsg, TaskContext};
use super::{join, members, now, Role};
use crate::domain::tasks::TaskType;

pub enum TaskPollerMsg {
    /// Tasks were committed: claim now rather than at the next tick.
    Wake,
    Tick,
    /// An attempt of this type finished (or gave its task back).
    JobDone(TaskType),
    /// Stop claiming; reply once every claimed task has finished or been given back.
    Drain(RpcReplyPort<()>),
}

pub struct TaskPollerState {
    ctx: Arc<TaskContext>,
    /// Claimed and not finished, per type.
    inflight: HashMap<TaskType, usize>,
    /// The last claim of the type was full: more are probably due.
    more_due: HashMap<TaskType, bool>,
    draining: Option<RpcReplyPort<()>>,
}

pub struct TaskPoller;

impl Actor for TaskPoller {
    type Msg = TaskPollerMsg;
    type State = TaskPollerState;
    type Arguments = Arc<TaskContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<TaskPollerMsg>,
        ctx: Arc<TaskContext>,
    ) -> Result<TaskPollerState, ActorProcessingErr> {
        join(&ctx.instance, Role::TaskPoller, myself.get_cell());
        myself.send_message(TaskPollerMsg::Tick)?;
        Ok(TaskPollerState { ctx, inflight: HashMap::new(), more_due: HashMap::new(), draining: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskPollerMsg>,
        msg: TaskPollerMsg,
        state: &mut TaskPollerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TaskPollerMsg::Wake => state.claim_all().await,
            TaskPollerMsg::Tick => {
                state.claim_all().await;
                myself.send_after(state.ctx.config.poll_interval, || TaskPollerMsg::Tick);
            }
            TaskPollerMsg::JobDone(t) => {
                let n = state.inflight.entry(t).or_default();
                *n = n.saturating_sub(1);
                let half_free = *n * 2 <= state.capacity();
                if half_free && state.more_due.get(&t).copied().unwrap_or(false) {
                    state.claim(t).await;
                }
            }
            TaskPollerMsg::Drain(reply) => {
                state.ctx.draining.store(true, Ordering::SeqCst);
                state.draining = Some(reply);
            }
        }
        for (t, n) in &state.inflight {
            metrics::gauge!(crate::telemetry::TASKS_INFLIGHT, "task_type" => t.as_str()).set(*n as f64);
        }
        if state.draining.is_some() && state.inflight.values().all(|n| *n == 0) {
            let _ = state.draining.take().expect("checked").send(());
        }
        Ok(())
    }
}

impl TaskPollerState {
    /// Claimed-but-unfinished tasks allowed per type: the executor's threads plus prefetch.
    fn capacity(&self) -> usize {
        self.ctx.config.threads * self.ctx.config.prefetch.max(1)
    }

    async fn claim_all(&mut self) {
        let mut types: Vec<TaskType> = self.ctx.handlers.keys().copied().collect();
        types.sort();
        for t in types {
            self.claim(t).await;
        }
    }

    async fn claim(&mut self, t: TaskType) {
        if self.draining.is_some() {
            return;
        }
        let inflight = self.inflight.get(&t).copied().unwrap_or(0);
        let free = self.capacity().saturating_sub(inflight);
        if free == 0 {
            return;
        }
        let Some(executor) = members::<ExecutorMsg>(&self.ctx.instance, Role::Executor(t)).into_iter().next() else {
            return; // restarting; the next tick claims for it
        };
        let limit = free.min(self.ctx.config.batch) as u32;
        let at = now();
        let lease = chrono::Duration::from_std(self.ctx.config.lease).unwrap_or(chrono::Duration::seconds(600));
        let tasks = match self.ctx.repo.claim_tasks(t.as_str(), at, at + lease, limit).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!(task_type = %t, error = %e, "task claim failed");
                self.more_due.insert(t, false);
                return;
            }
        };
        self.more_due.insert(t, tasks.len() as u32 == limit);
        if tasks.is_empty() {
            return;
        }
        let ids: Vec<u64> = tasks.iter().map(|t| t.id).collect();
        let n = tasks.len();
        if executor.send_message(ExecutorMsg::Run(tasks)).is_err() {
            // it died between lookup and send: give the tasks back now rather than at lease end
            if let Err(e) = self.ctx.repo.release_tasks(&ids, at).await {
                tracing::warn!(task_type = %t, error = %e, "could not release tasks; their leases will expire");
            }
            return;
        }
        *self.inflight.entry(t).or_default() += n;
    }
}
