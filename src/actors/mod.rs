//! One actor per file, named for its role, its messages beside it. Actors are given the
//! mailboxes they send to when they are built (`Mailbox` outlives restarts), the worker pools
//! are ractor's factory (`pool`), and one `Supervisor` runs every level of the tree.

pub mod backfill;
pub mod committer;
pub mod distillery;
pub mod group_commit;
pub mod heartbeat;
pub mod intake;
pub mod mailbox;
pub mod poller;
pub mod pool;
pub mod queue_metrics;
pub mod supervisor;
pub mod task_executor;

use std::sync::Arc;

use crate::store::{ClaimedTask, QueuedCdr};

/// Faults a test can inject at a worker boundary, per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Panic,
    Hang,
    /// A slow job: it finishes after this long.
    Sleep(std::time::Duration),
}

pub type FaultHook = Arc<dyn Fn(&QueuedCdr) -> Option<Fault> + Send + Sync>;
pub type TaskFaultHook = Arc<dyn Fn(&ClaimedTask) -> Option<Fault> + Send + Sync>;

/// Test hooks; all `None` in production.
#[derive(Clone, Default)]
pub struct Hooks {
    /// A panic strikes inside the normalizer (inline or on the blocking pool, by size), a
    /// hang or a sleep before it.
    pub distillery_fault: Option<FaultHook>,
    /// Injected inside the handler's future, where a real handler bug would strike.
    pub task_fault: Option<TaskFaultHook>,
}

/// Below this size a CDR parses in well under 100 µs: cheaper inline than a hop to the
/// blocking pool and back (each hop is two context switches).
pub const INLINE_PARSE_LIMIT: usize = 32 * 1024;

/// Runs CPU work on `len` bytes inline when small, on the blocking pool when large. A panic
/// comes back the same way from either: as the `Err` payload.
pub async fn cpu_bound<T: Send + 'static>(
    len: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::thread::Result<T> {
    if len < INLINE_PARSE_LIMIT {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
    } else {
        tokio::task::spawn_blocking(work).await.map_err(|e| match e.try_into_panic() {
            Ok(payload) => payload,
            Err(cancelled) => Box::new(cancelled.to_string()),
        })
    }
}
