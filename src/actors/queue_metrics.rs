//! QueueMetrics: refreshes the seed's queue gauges (`cdr_queue_pending`, `cdr_queue_errors`,
//! `tasks_pending`, `tasks_errors`) from the database and `distiller_throughput` from this
//! process's outcome count. Two grouped counts over covering indexes per refresh: cheap
//! enough for every instance to run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::domain::tasks::TaskType;
use crate::store::Repository;
use crate::telemetry::{self, CDR_QUEUE_ERRORS, CDR_QUEUE_PENDING, DISTILLER_THROUGHPUT, TASKS_ERRORS, TASKS_PENDING};

pub struct Refresh;

pub struct QueueMetricsArgs {
    pub repo: Arc<dyn Repository>,
    pub interval: Duration,
}

pub struct QueueMetricsState {
    args: QueueMetricsArgs,
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
        Ok(QueueMetricsState { args, last: (Instant::now(), telemetry::distilled_so_far()) })
    }

    async fn handle(
        &self,
        myself: ActorRef<Refresh>,
        _: Refresh,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A failed query leaves the gauges as they were; the database error is counted.
        if let Ok(q) = state.args.repo.queue_counts().await {
            metrics::gauge!(CDR_QUEUE_PENDING).set(q.pending as f64);
            metrics::gauge!(CDR_QUEUE_ERRORS).set(q.error as f64);
        }
        if let Ok(rows) = state.args.repo.task_counts().await {
            for t in TaskType::ALL {
                let count = |done: &str| {
                    rows.iter().filter(|(ty, d, _)| ty == t.as_str() && d == done).map(|(_, _, n)| *n).sum::<u64>()
                };
                metrics::gauge!(TASKS_PENDING, "task_type" => t.as_str()).set(count("n") as f64);
                metrics::gauge!(TASKS_ERRORS, "task_type" => t.as_str()).set(count("error") as f64);
            }
        }
        let now = (Instant::now(), telemetry::distilled_so_far());
        let minutes = now.0.duration_since(state.last.0).as_secs_f64() / 60.0;
        if minutes > 0.0 {
            metrics::gauge!(DISTILLER_THROUGHPUT).set((now.1 - state.last.1) as f64 / minutes);
        }
        state.last = now;
        myself.send_after(state.args.interval, || Refresh);
        Ok(())
    }
}
