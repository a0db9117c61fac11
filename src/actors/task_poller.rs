//! TaskPoller: claims due tasks per type (`idx_type_done_next`) under a lease and hands them
//! to that type's pool, never more than the pool has room for. Woken by the distilleries'
//! commits, by a pool with room again, and by a timer (`tasksd.poll_interval_seconds`) for
//! retries coming due.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::pool::Pool;
use super::task_executor::TaskExecutor;
use crate::domain::tasks::TaskType;
use crate::store::TaskQueue;

pub enum TaskPollerMsg {
    /// Tasks were committed: claim now rather than at the next tick.
    Wake,
    Tick,
    /// A task of this type left its pool: there may be room for more.
    Finished(TaskType),
}

pub struct TaskPollerArgs {
    pub queue: Arc<dyn TaskQueue>,
    /// One pool per configured task type, claimed for in this order.
    pub pools: BTreeMap<TaskType, Pool<TaskExecutor>>,
    pub poll_interval: Duration,
    pub batch: usize,
    pub lease: Duration,
}

pub struct TaskPollerState {
    args: TaskPollerArgs,
    /// The last claim of the type was full: more are probably due.
    more_due: HashMap<TaskType, bool>,
}

pub struct TaskPoller;

impl Actor for TaskPoller {
    type Msg = TaskPollerMsg;
    type State = TaskPollerState;
    type Arguments = TaskPollerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TaskPollerMsg>,
        args: TaskPollerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(TaskPollerMsg::Tick)?;
        Ok(TaskPollerState { args, more_due: HashMap::new() })
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
                myself.send_after(state.args.poll_interval, || TaskPollerMsg::Tick);
            }
            TaskPollerMsg::Finished(t) => {
                if state.more_due.get(&t).copied().unwrap_or(false) {
                    state.claim(t, false).await;
                }
            }
        }
        Ok(())
    }
}

impl TaskPollerState {
    async fn claim_all(&mut self) {
        let types: Vec<TaskType> = self.args.pools.keys().copied().collect();
        for t in types {
            self.claim(t, true).await;
        }
    }

    /// Claims for one type when its pool has room (on a pool's signal: half its room).
    async fn claim(&mut self, t: TaskType, forced: bool) {
        let Some(pool) = self.args.pools.get(&t) else { return };
        let room = pool.room().await;
        if room == 0 || !(forced || room * 2 >= pool.capacity()) {
            return;
        }
        let limit = room.min(self.args.batch) as u32;
        let now = chrono::Utc::now();
        let lease = chrono::Duration::from_std(self.args.lease).unwrap_or(chrono::Duration::seconds(600));
        let tasks = match self.args.queue.claim_tasks(t, now, now + lease, limit).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!(task_type = %t, error = %e, "task claim failed");
                self.more_due.insert(t, false);
                return;
            }
        };
        self.more_due.insert(t, tasks.len() as u32 == limit);
        let refused: Vec<u64> = tasks.into_iter().filter_map(|task| pool.dispatch(task).err()).map(|t| t.id).collect();
        // the pool is restarting: give the tasks back now rather than at lease end
        if !refused.is_empty() {
            if let Err(e) = self.args.queue.release_tasks(&refused, now).await {
                tracing::warn!(task_type = %t, error = %e, "could not release tasks; their leases will expire");
            }
        }
    }
}
