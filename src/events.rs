//! Typed events: each is emitted where it happens and, here and only here, becomes its log
//! line and its metrics (names and buckets in `telemetry`). A dashboard and the logs then
//! cannot disagree about what happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::domain::mapping::FieldWarning;
use crate::domain::outcome::Outcome;
use crate::domain::tasks::TaskType;
use crate::store::{ClaimedTask, Crash, QueueCounts, RowState};
use crate::telemetry::*;

/// CDRs distilled (successful or duplicate) since start, for `distiller_throughput`.
static DISTILLED: AtomicU64 = AtomicU64::new(0);

pub fn distilled_so_far() -> u64 {
    DISTILLED.load(Ordering::Relaxed)
}

/// The CDR database returned an error (a restarted deadlock included).
pub struct DatabaseError;

impl DatabaseError {
    pub fn emit(self) {
        metrics::counter!(DATABASE_ERRORS).increment(1);
    }
}

/// Reading or writing a CDR file or object failed.
pub struct StorageError;

impl StorageError {
    pub fn emit(self) {
        metrics::counter!(STORAGE_ERRORS).increment(1);
    }
}

/// A supervisor or a pool restarted a child after it died.
pub struct ActorRestarted<'a> {
    pub actor: &'a str,
    pub reason: &'a str,
    pub delay: Duration,
}

impl ActorRestarted<'_> {
    pub fn emit(self) {
        tracing::error!("{} died: {}; restarting in {:?}", self.actor, self.reason, self.delay);
        metrics::counter!(RESTARTS, "actor" => self.actor.to_string()).increment(1);
    }
}

/// One group-commit batch went to the database (intake or committer).
pub struct GroupCommitted {
    pub role: &'static str,
    pub batch: usize,
    pub elapsed: Duration,
}

impl GroupCommitted {
    pub fn emit(self) {
        tracing::trace!(
            role = self.role,
            batch = self.batch,
            elapsed_us = self.elapsed.as_micros() as u64,
            "group commit"
        );
        metrics::histogram!(GROUP_COMMIT_SECONDS, "role" => self.role).record(self.elapsed.as_secs_f64());
        metrics::histogram!(GROUP_COMMIT_BATCH, "role" => self.role).record(self.batch as f64);
    }
}

/// A distillery job ended with one of the seed's outcomes.
pub struct CdrDistilled<'a> {
    pub cdr_id: u64,
    pub path: &'a str,
    pub outcome: &'a Outcome,
}

impl CdrDistilled<'_> {
    pub fn emit(self) {
        metrics::counter!(OUTCOMES, "outcome" => self.outcome.label()).increment(1);
        if self.outcome.is_success() {
            DISTILLED.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(cdr_id = self.cdr_id, path = %self.path, "{}", self.outcome.label());
        } else {
            tracing::warn!(cdr_id = self.cdr_id, path = %self.path, "{}", self.outcome);
        }
    }
}

/// A distillery died on a CDR (panic or hang); its crash is counted in its row.
pub struct CdrCrashed<'a> {
    pub cdr_id: u64,
    pub path: &'a str,
    pub reason: &'a str,
    pub crash: Crash,
}

impl CdrCrashed<'_> {
    pub fn emit(self) {
        metrics::counter!(OUTCOMES, "outcome" => "internal_failure").increment(1);
        let Crash { count, poison } = self.crash;
        if poison {
            tracing::error!(cdr_id = self.cdr_id, path = %self.path, "poison pill: brought down a distillery {count} times; marked critical; last: {}", self.reason);
        } else {
            tracing::error!(cdr_id = self.cdr_id, path = %self.path, "internal_failure: {} (crash {count}); retrying soon", self.reason);
        }
    }
}

/// CDRs the distillery pool holds, queued and running.
pub struct CdrsInFlight(pub usize);

impl CdrsInFlight {
    pub fn emit(self) {
        metrics::gauge!(INFLIGHT).set(self.0 as f64);
    }
}

/// Tasks one type's pool holds, queued and running.
pub struct TasksInFlight {
    pub task_type: TaskType,
    pub n: usize,
}

impl TasksInFlight {
    pub fn emit(self) {
        metrics::gauge!(TASKS_INFLIGHT, "task_type" => self.task_type.as_str()).set(self.n as f64);
    }
}

/// A task attempt ended.
pub struct TaskAttempted<'a> {
    pub task: &'a ClaimedTask,
    pub outcome: &'a Outcome,
}

impl TaskAttempted<'_> {
    pub fn emit(self) {
        let (task, ty) = (self.task, self.task.task_type.as_str());
        let label = match self.outcome {
            Outcome::Successful | Outcome::SuccessfulDuplicate => "done",
            Outcome::RetriableFailure(_) => "retriable",
            Outcome::PermanentFailure(_) => "permanent",
            Outcome::InternalFailure(_) => "internal",
        };
        metrics::counter!(TASK_OUTCOMES, "task_type" => ty, "outcome" => label).increment(1);
        if self.outcome.is_success() {
            let latency = (chrono::Utc::now() - task.create_time).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(TASK_LATENCY, "task_type" => ty).record(latency);
            tracing::debug!(task_id = task.id, task_type = ty, "task done");
        } else {
            tracing::warn!(task_id = task.id, task_type = ty, "task attempt failed: {}", self.outcome);
        }
    }
}

/// The seed's queue gauges, refreshed from the database (a failed query leaves its gauges).
pub struct QueueDepths {
    pub queue: Option<QueueCounts>,
    pub tasks: Option<Vec<(TaskType, RowState, u64)>>,
    /// CDRs distilled per minute by this process since the last refresh.
    pub per_minute: Option<f64>,
}

impl QueueDepths {
    pub fn emit(self) {
        if let Some(q) = self.queue {
            metrics::gauge!(CDR_QUEUE_PENDING).set(q.pending as f64);
            metrics::gauge!(CDR_QUEUE_ERRORS).set(q.error as f64);
        }
        if let Some(rows) = self.tasks {
            for t in TaskType::ALL {
                let count = |state: RowState| {
                    rows.iter().filter(|(ty, d, _)| *ty == t && *d == state).map(|(_, _, n)| *n).sum::<u64>()
                };
                metrics::gauge!(TASKS_PENDING, "task_type" => t.as_str()).set(count(RowState::Pending) as f64);
                metrics::gauge!(TASKS_ERRORS, "task_type" => t.as_str()).set(count(RowState::Error) as f64);
            }
        }
        if let Some(rate) = self.per_minute {
            metrics::gauge!(DISTILLER_THROUGHPUT).set(rate);
        }
    }
}

/// The shards (id residues) this process claims changed: it started claiming, took over a
/// silent side's rows, or gave them back.
pub struct ShardClaims<'a> {
    pub shard: crate::domain::shard::Shard,
    pub queue: &'static str,
    pub residues: &'a std::collections::BTreeSet<u32>,
}

impl ShardClaims<'_> {
    pub fn emit(self) {
        metrics::gauge!(SHARD_RESIDUES, "queue" => self.queue).set(self.residues.len() as f64);
        let inc = self.shard.increment;
        let list: Vec<String> = self.residues.iter().map(|r| format!("id % {inc} = {r}")).collect();
        let others = self.residues.iter().filter(|r| **r != self.shard.residue).count();
        match others {
            0 => tracing::info!(shard = %self.shard, "{}: claiming {}", self.queue, list.join(", ")),
            _ => {
                tracing::warn!(shard = %self.shard, "{}: taking over a silent shard, claiming {}", self.queue, list.join(", "))
            }
        }
    }
}

/// A value a CDR carried did not fit its field and was left empty (the call is billed anyway).
pub struct FieldWarned<'a> {
    /// The call.
    pub uuid: &'a str,
    pub warning: &'a FieldWarning,
}

impl FieldWarned<'_> {
    pub fn emit(self) {
        let w = self.warning;
        tracing::warn!(uuid = self.uuid, field = %w.field, value = %w.value, "field left empty: {}", w.reason);
        metrics::counter!(FIELD_WARNINGS, "field" => w.field.clone()).increment(1);
    }
}

/// An HTTP request to the intake listener was answered.
pub struct IntakeAnswered {
    pub endpoint: &'static str,
    pub status: u16,
}

impl IntakeAnswered {
    pub fn emit(self) {
        metrics::counter!(INTAKE_REQUESTS, "endpoint" => self.endpoint, "status" => self.status.to_string())
            .increment(1);
    }
}

/// At the connection cap, the connection idle the longest was closed to admit a new one.
pub struct ConnectionEvicted;

impl ConnectionEvicted {
    pub fn emit(self) {
        tracing::debug!("connection cap reached: closed the longest-idle connection");
        metrics::counter!(CONNECTIONS_SHED, "reason" => "evicted").increment(1);
    }
}

/// At the connection cap with every connection busy, a new connection got a 503.
pub struct ConnectionRefused;

impl ConnectionRefused {
    pub fn emit(self) {
        if rejections_may_log() {
            tracing::warn!("connection cap reached with every connection busy: answered 503");
        }
        metrics::counter!(CONNECTIONS_SHED, "reason" => "refused").increment(1);
    }
}

/// A request to the intake API was refused (4xx/5xx): one warning each, rate-limited so a
/// misbehaving switch or a scanner cannot flood the log.
pub struct IntakeRejected<'a> {
    pub peer: Option<std::net::SocketAddr>,
    pub endpoint: &'a str,
    pub status: u16,
    pub reason: &'a str,
    pub uuid: Option<&'a str>,
}

impl IntakeRejected<'_> {
    pub fn emit(self) {
        if !rejections_may_log() {
            return;
        }
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        let peer = self.peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        tracing::warn!(
            peer = %peer,
            status = self.status,
            endpoint = self.endpoint,
            uuid = self.uuid.unwrap_or("-"),
            suppressed_before = suppressed,
            "request refused: {}",
            self.reason
        );
    }
}

/// Rejection lines per second before the rest of that second is only counted.
const REJECTION_LINES_PER_SECOND: u64 = 10;
static REJECTION_WINDOW: AtomicU64 = AtomicU64::new(0);
static REJECTION_LINES: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

fn rejections_may_log() -> bool {
    let second = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if REJECTION_WINDOW.swap(second, Ordering::Relaxed) != second {
        REJECTION_LINES.store(0, Ordering::Relaxed);
    }
    if REJECTION_LINES.fetch_add(1, Ordering::Relaxed) < REJECTION_LINES_PER_SECOND {
        true
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Rows waiting in the intake spool (after a change).
pub struct SpoolDepth {
    pub rows: u64,
}

impl SpoolDepth {
    pub fn emit(self) {
        metrics::gauge!(SPOOL_ROWS).set(self.rows as f64);
    }
}

/// The database could not take an intake batch: its rows went to the spool.
pub struct Spooled<'a> {
    pub rows: usize,
    pub why: &'a str,
    /// False when the rows only queued behind older spooled ones.
    pub database_failed: bool,
}

impl Spooled<'_> {
    pub fn emit(self) {
        if self.database_failed {
            tracing::warn!(rows = self.rows, "database unavailable ({}); queue rows spooled locally", self.why);
        } else {
            tracing::debug!(rows = self.rows, "queue rows spooled: {}", self.why);
        }
    }
}

/// Spooled rows reached the database.
pub struct Backfilled {
    pub rows: usize,
    /// Of them, not already there (a row spooled after a commit that did go through is not).
    pub new: u64,
}

impl Backfilled {
    pub fn emit(self) {
        tracing::info!(rows = self.rows, new = self.new, "spooled queue rows backfilled into the database");
        metrics::counter!(SPOOL_BACKFILLED).increment(self.rows as u64);
    }
}

/// The spool still has rows and the database still does not take them.
pub struct BackfillWaiting<'a> {
    pub rows: u64,
    pub why: &'a str,
    pub retry_in: Duration,
}

impl BackfillWaiting<'_> {
    pub fn emit(self) {
        tracing::warn!(
            rows = self.rows,
            "backfill waits for the database ({}); next try in {:?}",
            self.why,
            self.retry_in
        );
    }
}

/// `cdrmunch ship`: intake accepted a file and it left the directory.
pub struct ShipSent<'a> {
    pub file: &'a std::path::Path,
    pub status: u16,
}

impl ShipSent<'_> {
    pub fn emit(self) {
        tracing::debug!(file = %self.file.display(), status = self.status, "shipped");
        metrics::counter!(SHIP_SENT).increment(1);
    }
}

/// `cdrmunch ship`: intake refused a file for good; it went to `rejected/` with the reason.
pub struct ShipRejected<'a> {
    pub file: &'a std::path::Path,
    pub status: u16,
    pub reason: &'a str,
}

impl ShipRejected<'_> {
    pub fn emit(self) {
        tracing::warn!(file = %self.file.display(), status = self.status, "rejected by intake, moved to rejected/: {}", self.reason.trim());
        metrics::counter!(SHIP_REJECTED).increment(1);
    }
}

/// `cdrmunch ship`: a POST got no answer or a retriable status; the file is tried again.
pub struct ShipRetrying<'a> {
    pub file: &'a std::path::Path,
    pub failures: u32,
    pub reason: &'a str,
    pub delay: Duration,
}

impl ShipRetrying<'_> {
    pub fn emit(self) {
        // a receiver down means every file fails: rate-limited like intake's refusals
        if !rejections_may_log() {
            metrics::counter!(SHIP_RETRIES).increment(1);
            return;
        }
        tracing::warn!(
            file = %self.file.display(),
            failures = self.failures,
            "not delivered ({}); next attempt in {:?}",
            self.reason,
            self.delay
        );
        metrics::counter!(SHIP_RETRIES).increment(1);
    }
}

/// `cdrmunch ship`: what waits in the directories.
pub struct ShipBacklog {
    pub files: usize,
    pub oldest: Duration,
}

impl ShipBacklog {
    pub fn emit(self) {
        metrics::gauge!(SHIP_PENDING).set(self.files as f64);
        metrics::gauge!(SHIP_OLDEST_AGE).set(self.oldest.as_secs_f64());
    }
}

/// A re-post of a queued CDR with other bytes than the first.
pub struct IntakeConflicted<'a> {
    pub uuid: &'a str,
    /// `kept_first` (the other body kept as evidence) or `replaced` (the first had failed).
    pub kind: &'static str,
    pub first: &'a str,
    pub other: &'a str,
}

impl IntakeConflicted<'_> {
    pub fn emit(self) {
        tracing::warn!(
            uuid = self.uuid,
            kind = self.kind,
            first = self.first,
            other = self.other,
            "a re-posted CDR differs from the one queued"
        );
        metrics::counter!(INTAKE_CONFLICTS, "kind" => self.kind).increment(1);
    }
}
