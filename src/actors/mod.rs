//! One actor per file, named for its role, its messages beside it. Actors find each other
//! through ractor process groups scoped to one running instance, so a restarted actor is
//! reachable again as soon as it has joined, and two apps in one test process never mix.

pub mod committer;
pub mod distillery;
pub mod group_commit;
pub mod intake;
pub mod queue_metrics;
pub mod queue_poller;
pub mod task_executor;
pub mod task_poller;

use std::sync::Arc;
use std::time::Duration;

use ractor::{pg, ActorCell, ActorRef};

use crate::domain::tasks::TaskType;
use crate::store::{ClaimedTask, QueuedCdr};

/// Roles that other actors look up by group.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Intake,
    QueuePoller,
    Committer,
    TaskPoller,
    Executor(TaskType),
}

fn group(instance: &str, role: Role) -> String {
    format!("cdrmunch/{instance}/{role:?}")
}

pub(crate) fn join(instance: &str, role: Role, cell: ActorCell) {
    pg::join(group(instance, role), vec![cell]);
}

/// The live members of a role in this instance (empty while one restarts).
pub fn members<M>(instance: &str, role: Role) -> Vec<ActorRef<M>> {
    pg::get_members(&group(instance, role)).into_iter().map(ActorRef::from).collect()
}

/// Faults a test can inject at the distillery boundary, per CDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Panic,
    Hang,
}

pub type FaultHook = Arc<dyn Fn(&QueuedCdr) -> Option<Fault> + Send + Sync>;
pub type TaskFaultHook = Arc<dyn Fn(&ClaimedTask) -> Option<Fault> + Send + Sync>;

/// Test hooks; all `None` in production.
#[derive(Clone, Default)]
pub struct Hooks {
    pub distillery_fault: Option<FaultHook>,
    /// Injected inside the handler's task, where a real handler bug would strike.
    pub task_fault: Option<TaskFaultHook>,
}

/// The distiller's settings, resolved from config once.
#[derive(Debug, Clone)]
pub struct DistillerConfig {
    pub distilleries: usize,
    pub poll_interval: Duration,
    pub max_batch: usize,
    pub lease: Duration,
    pub job_timeout: Duration,
    pub retry_backoff_base: u64,
    pub retry_backoff_max: u64,
    pub poison_threshold: u32,
    pub prefetch: usize,
    /// The normalizer's configuration (task rules, rate deck, field map, org directory);
    /// each CDR's path and receipt time are filled in per job.
    pub normalize: crate::domain::normalize::NormalizeContext,
}

/// Below this size a CDR parses in well under 100 µs: cheaper inline than a hop to the
/// blocking pool and back (each hop is two context switches).
pub const INLINE_PARSE_LIMIT: usize = 32 * 1024;

/// Runs CPU work on `len` bytes inline when small, on the blocking pool when large.
pub async fn cpu_bound<T: Send + 'static>(
    len: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if len < INLINE_PARSE_LIMIT {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}
