//! The pollers: the QueuePoller claims due `cdr_queue` rows for the distillery pool, the
//! TaskPoller due tasks for each task type's pool — the same actor over different lanes. A
//! lane claims under a lease, never more than its pool has room for (mailboxes are
//! unbounded, so backpressure lives here, and the pool's factory is the one place that
//! knows its room). Woken by commits (intake's, the committer's), by a pool with room again,
//! and by a timer for retries coming due. Every third of a lease it renews the leases of
//! the jobs its pools hold, so a lease can be short and a long job still keeps its claim.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::distillery::Distillery;
use super::pool::{Pool, Work};
use super::task_executor::TaskExecutor;
use crate::domain::tasks::TaskType;
use crate::store::{CdrQueue, StoreResult, TaskQueue, Time};

/// One queue a poller claims from, for one pool.
pub trait Lane: Send + Sync + 'static {
    type Work: Work;
    /// For logs: `cdr_queue`, or the task type.
    fn name(&self) -> &str;
    fn claim(&self, now: Time, until: Time, limit: u32) -> impl Future<Output = StoreResult<Vec<Job<Self>>>> + Send;
    /// Claims the pool could not take, due again at once.
    fn release(&self, ids: &[u64], now: Time) -> impl Future<Output = StoreResult<()>> + Send;
    /// Extends the leases of the claims among `ids` this process still holds.
    fn renew(&self, ids: &[u64], until: Time) -> impl Future<Output = StoreResult<u64>> + Send;
}

type Job<L> = <<L as Lane>::Work as Work>::Job;

/// `cdr_queue`, for the distillery pool.
pub struct CdrLane(pub Arc<dyn CdrQueue>);

impl Lane for CdrLane {
    type Work = Distillery;
    fn name(&self) -> &str {
        "cdr_queue"
    }
    async fn claim(&self, now: Time, until: Time, limit: u32) -> StoreResult<Vec<Job<Self>>> {
        self.0.claim_cdrs(now, until, limit).await
    }
    async fn release(&self, ids: &[u64], _now: Time) -> StoreResult<()> {
        self.0.release_claims(ids).await
    }
    async fn renew(&self, ids: &[u64], until: Time) -> StoreResult<u64> {
        self.0.renew_claims(ids, until).await
    }
}

/// One task type's rows of `tasks` (`idx_type_done_next`), for that type's pool.
pub struct TaskLane(pub Arc<dyn TaskQueue>, pub TaskType);

impl Lane for TaskLane {
    type Work = TaskExecutor;
    fn name(&self) -> &str {
        self.1.as_str()
    }
    async fn claim(&self, now: Time, until: Time, limit: u32) -> StoreResult<Vec<Job<Self>>> {
        self.0.claim_tasks(self.1, now, until, limit).await
    }
    async fn release(&self, ids: &[u64], now: Time) -> StoreResult<()> {
        self.0.release_tasks(ids, now).await
    }
    async fn renew(&self, ids: &[u64], until: Time) -> StoreResult<u64> {
        self.0.renew_tasks(ids, until).await
    }
}

pub enum PollerMsg {
    /// Rows were committed: claim now rather than at the next tick.
    Wake,
    /// The poll timer; re-armed at the end of each tick.
    Tick,
    /// A job left the pool of lane `n`: there may be room for more.
    Finished(usize),
    /// The lease renewal timer; re-armed at the end of each renewal.
    Renew,
}

pub struct PollerArgs<L: Lane> {
    /// Claimed for in this order.
    pub lanes: Vec<(L, Pool<L::Work>)>,
    pub poll_interval: Duration,
    pub batch: usize,
    pub lease: Duration,
}

pub struct PollerState<L: Lane> {
    args: PollerArgs<L>,
    /// Per lane: its last claim was full, so more rows are probably due.
    more_due: Vec<bool>,
    /// Per lane: jobs that left the pool since the lane last asked the pool for its room;
    /// asking is a round trip, worth it once half the pool may be free again.
    freed: Vec<usize>,
}

pub struct Poller<L>(PhantomData<fn() -> L>);

impl<L> Default for Poller<L> {
    fn default() -> Self {
        Poller(PhantomData)
    }
}

pub type QueuePoller = Poller<CdrLane>;
pub type TaskPoller = Poller<TaskLane>;

impl<L: Lane> Actor for Poller<L> {
    type Msg = PollerMsg;
    type State = PollerState<L>;
    type Arguments = PollerArgs<L>;

    async fn pre_start(
        &self,
        myself: ActorRef<PollerMsg>,
        args: PollerArgs<L>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(PollerMsg::Tick)?;
        myself.send_after(renew_every(args.lease), || PollerMsg::Renew);
        Ok(PollerState { more_due: vec![true; args.lanes.len()], freed: vec![0; args.lanes.len()], args })
    }

    async fn handle(
        &self,
        myself: ActorRef<PollerMsg>,
        msg: PollerMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PollerMsg::Wake | PollerMsg::Tick => {
                for lane in 0..state.args.lanes.len() {
                    state.more_due[lane] = true;
                    state.claim(lane, true).await;
                }
                if matches!(msg, PollerMsg::Tick) {
                    myself.send_after(state.args.poll_interval, || PollerMsg::Tick);
                }
            }
            PollerMsg::Finished(lane) => state.claim(lane, false).await,
            PollerMsg::Renew => {
                state.renew().await;
                myself.send_after(renew_every(state.args.lease), || PollerMsg::Renew);
            }
        }
        Ok(())
    }
}

/// A lease is renewed three times over its length: two renewals can fail (the database
/// away for a moment) before it runs out.
fn renew_every(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(100))
}

fn lease_end(now: Time, lease: Duration) -> Time {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
}

impl<L: Lane> PollerState<L> {
    /// Extends the leases of every job the pools hold, queued or running.
    async fn renew(&self) {
        for (queue, pool) in &self.args.lanes {
            let held = pool.held_keys();
            if held.is_empty() {
                continue;
            }
            let until = lease_end(chrono::Utc::now(), self.args.lease);
            match queue.renew(&held, until).await {
                Ok(n) => tracing::trace!(lane = queue.name(), held = held.len(), renewed = n, "leases renewed"),
                // the next renewal tries again; two in a row failing let the leases run out
                Err(e) => tracing::warn!(lane = queue.name(), error = %e, "could not renew {} leases", held.len()),
            }
        }
    }

    /// Claims when it is worth a round trip: always on a wake or tick, otherwise only when
    /// more rows are known to be due and half the pool's room is free.
    async fn claim(&mut self, lane: usize, forced: bool) {
        let Some((queue, pool)) = self.args.lanes.get(lane) else { return };
        if !forced {
            self.freed[lane] += 1;
            if !self.more_due[lane] || self.freed[lane] * 2 < pool.capacity() {
                return;
            }
        }
        self.freed[lane] = 0;
        let room = pool.room().await;
        if room == 0 || !(forced || room * 2 >= pool.capacity()) {
            return;
        }
        let limit = room.min(self.args.batch) as u32;
        let now = chrono::Utc::now();
        let until = lease_end(now, self.args.lease);
        let jobs = match queue.claim(now, until, limit).await {
            Ok(jobs) => jobs,
            Err(e) => {
                // Nothing claimed, nothing lost: the next tick tries again.
                self.more_due[lane] = false;
                tracing::warn!(lane = queue.name(), error = %e, "claim failed");
                return;
            }
        };
        self.more_due[lane] = jobs.len() as u32 == limit;
        let refused: Vec<u64> =
            jobs.into_iter().filter_map(|job| pool.dispatch(job).err()).map(|j| L::Work::key(&j)).collect();
        // the pool is restarting: give the claims back now rather than at lease end
        if !refused.is_empty() {
            if let Err(e) = queue.release(&refused, now).await {
                tracing::warn!(lane = queue.name(), error = %e, "could not release {} claims; their leases will expire", refused.len());
            }
        }
    }
}
