//! QueueMetrics: refreshes the seed's queue gauges (`cdr_queue_pending`, `cdr_queue_errors`,
//! `tasks_pending`, `tasks_errors`) from the database and `distiller_throughput` from this
//! process's outcome count. Two grouped counts over covering indexes per refresh: cheap
//! enough for every instance to run.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::events;
use crate::store::Store;

pub struct Refresh;

pub struct QueueMetricsArgs {
    pub store: Store,
    pub interval: Duration,
}

pub struct QueueMetricsState {
    args: QueueMetricsArgs,
    /// When the throughput was last computed, and the distilled count then.
    last: (Instant, u64),
}

pub struct QueueMetrics;

impl Actor for QueueMetrics {
    type Msg = Refresh;
    type State = QueueMetricsState;
    type Arguments = QueueMetricsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Refresh>,
        args: QueueMetricsArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(Refresh)?;
        Ok(QueueMetricsState { args, last: (Instant::now(), events::distilled_so_far()) })
    }

    async fn handle(
        &self,
        myself: ActorRef<Refresh>,
        _: Refresh,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A failed query leaves the gauges as they were; the database error is counted.
        let queue = state.args.store.queue_counts().await.ok();
        let tasks = state.args.store.task_counts().await.ok();
        let now = (Instant::now(), events::distilled_so_far());
        let minutes = now.0.duration_since(state.last.0).as_secs_f64() / 60.0;
        let per_minute = (minutes > 0.0).then(|| (now.1 - state.last.1) as f64 / minutes);
        events::QueueDepths { queue, tasks, per_minute }.emit();
        state.last = now;
        myself.send_after(state.args.interval, || Refresh);
        Ok(())
    }
}
