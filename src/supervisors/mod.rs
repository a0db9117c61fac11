//! The supervision tree and its restart policies.
//!
//! ```text
//! RootSupervisor
//! ├── IntakeActor            (group commit of cdr_queue rows)
//! ├── DistillerSupervisor
//! │     ├── QueuePoller      (lease-based claims, backpressure, poison-pill bookkeeping)
//! │     ├── Distillery × N   (restarted on internal failure)
//! │     └── Committer        (the distilleries' group commit)
//! ├── TaskSupervisor
//! │     ├── TaskPoller       (claims per task type under a lease)
//! │     └── TaskExecutor × configured types (executor.threads attempts each)
//! └── QueueMetrics           (the seed's queue gauges)
//! ```

pub mod distiller;
pub mod policy;
pub mod root;
pub mod tasks;

pub use policy::{Decision, RestartPolicy, RestartTracker};

use std::time::{Duration, Instant};

use ractor::{ActorId, ActorProcessingErr, SupervisionEvent};

/// The child that stopped and why, for a failure or an unrequested stop (a kill for a hang);
/// `None` for events that need no restart. Every stop counts: a supervisor that wants a
/// child gone sets its `shutting_down` first.
pub(crate) fn child_failure(evt: SupervisionEvent) -> Option<(ActorId, String)> {
    match evt {
        SupervisionEvent::ActorFailed(cell, err) => Some((cell.get_id(), err.to_string())),
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            Some((cell.get_id(), reason.unwrap_or_else(|| "stopped".into())))
        }
        _ => None,
    }
}

/// A worker subtree's answer to a child's death: the backoff before restarting it (logged and
/// counted under `label`), or an error that takes this supervisor down to its parent.
pub(crate) fn restart_delay(
    tracker: &mut RestartTracker,
    id: ActorId,
    child: &str,
    label: String,
    reason: &str,
) -> Result<Duration, ActorProcessingErr> {
    match tracker.on_failure(Instant::now()) {
        Decision::RestartAfter(delay) => {
            tracing::error!(actor = %id, "{child} died: {reason}; restarting in {delay:?}");
            metrics::counter!(crate::telemetry::RESTARTS, "actor" => label).increment(1);
            Ok(delay)
        }
        Decision::Escalate => Err(format!("restart intensity exceeded ({reason}); escalating").into()),
    }
}
