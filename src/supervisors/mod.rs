//! The supervision tree and its restart policies.
//!
//! ```text
//! RootSupervisor
//! ├── IntakeActor            (group commit of cdr_queue rows)
//! └── DistillerSupervisor
//!       ├── QueuePoller      (lease-based claims, backpressure, poison-pill bookkeeping)
//!       ├── Distillery × N   (restarted on internal failure)
//!       └── Committer        (the distilleries' group commit)
//! ```

pub mod distiller;
pub mod policy;
pub mod root;

pub use policy::{Decision, RestartPolicy, RestartTracker};
