//! Prometheus metrics: every name, HELP text and bucket set in one place (what is recorded,
//! and the log line beside it, comes from the typed events in `events`). Counters end in
//! `_total`; latencies and batch sizes are real histograms (not the exporter's default
//! summaries), so p99 aggregates across instances with `histogram_quantile`.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// The seed's Key Metrics, refreshed from the database by the MetricsActor.
pub const CDR_QUEUE_PENDING: &str = "cdr_queue_pending";
pub const CDR_QUEUE_ERRORS: &str = "cdr_queue_errors";
pub const TASKS_PENDING: &str = "tasks_pending";
pub const TASKS_ERRORS: &str = "tasks_errors";
pub const DISTILLER_THROUGHPUT: &str = "distiller_throughput";
// Counted where things happen.
pub const OUTCOMES: &str = "cdrmunch_distillery_outcomes_total";
pub const INTAKE_REQUESTS: &str = "cdrmunch_intake_requests_total";
pub const RESTARTS: &str = "cdrmunch_actor_restarts_total";
pub const INFLIGHT: &str = "cdrmunch_inflight_cdrs";
pub const DATABASE_ERRORS: &str = "cdrmunch_database_errors_total";
pub const STORAGE_ERRORS: &str = "cdrmunch_storage_errors_total";
pub const GROUP_COMMIT_SECONDS: &str = "cdrmunch_group_commit_duration_seconds";
pub const GROUP_COMMIT_BATCH: &str = "cdrmunch_group_commit_batch_size";
pub const TASK_OUTCOMES: &str = "cdrmunch_task_outcomes_total";
pub const TASK_LATENCY: &str = "cdrmunch_task_latency_seconds";
pub const TASKS_INFLIGHT: &str = "cdrmunch_inflight_tasks";
pub const FIELD_WARNINGS: &str = "cdrmunch_field_warnings_total";
pub const CONNECTIONS_SHED: &str = "cdrmunch_http_connections_shed_total";
pub const SPOOL_ROWS: &str = "cdrmunch_spool_rows";
pub const SPOOL_BACKFILLED: &str = "cdrmunch_spool_backfilled_total";
pub const INTAKE_CONFLICTS: &str = "cdrmunch_intake_conflicts_total";
pub const SHARD_RESIDUES: &str = "cdrmunch_shard_residues_claimed";

// `cdrmunch ship`, on its own /metrics.
pub const SHIP_PENDING: &str = "cdrmunch_ship_files_pending";
pub const SHIP_OLDEST_AGE: &str = "cdrmunch_ship_oldest_pending_age_seconds";
pub const SHIP_SENT: &str = "cdrmunch_ship_sent_total";
pub const SHIP_REJECTED: &str = "cdrmunch_ship_rejected_total";
pub const SHIP_RETRIES: &str = "cdrmunch_ship_retries_total";

/// Every metric this service exports (dashboards and alert rules are checked against it).
pub const ALL: [&str; 27] = [
    CDR_QUEUE_PENDING,
    CDR_QUEUE_ERRORS,
    TASKS_PENDING,
    TASKS_ERRORS,
    DISTILLER_THROUGHPUT,
    OUTCOMES,
    INTAKE_REQUESTS,
    RESTARTS,
    INFLIGHT,
    DATABASE_ERRORS,
    STORAGE_ERRORS,
    GROUP_COMMIT_SECONDS,
    GROUP_COMMIT_BATCH,
    TASK_OUTCOMES,
    TASK_LATENCY,
    TASKS_INFLIGHT,
    FIELD_WARNINGS,
    CONNECTIONS_SHED,
    SPOOL_ROWS,
    SPOOL_BACKFILLED,
    INTAKE_CONFLICTS,
    SHARD_RESIDUES,
    SHIP_PENDING,
    SHIP_OLDEST_AGE,
    SHIP_SENT,
    SHIP_REJECTED,
    SHIP_RETRIES,
];

/// Create -> done of a task spans a poll interval at best and retry backoffs at worst.
const TASK_LATENCY_BUCKETS: [f64; 14] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0];

const SECONDS_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(TASK_LATENCY.into()), &TASK_LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), &BATCH_BUCKETS))
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(CDR_QUEUE_PENDING, "CDRs in cdr_queue awaiting processing (done='n').");
    describe_gauge!(CDR_QUEUE_ERRORS, "CDRs in cdr_queue in error state (done='error').");
    describe_gauge!(TASKS_PENDING, "Post-call tasks awaiting execution (done='n'), by task type.");
    describe_gauge!(TASKS_ERRORS, "Post-call tasks that failed for good (done='error'), by task type.");
    describe_gauge!(DISTILLER_THROUGHPUT, "CDRs distilled per minute by this process, over the last refresh interval.");
    describe_counter!(OUTCOMES, "CDRs distilled by this process, by the seed's outcome.");
    describe_counter!(INTAKE_REQUESTS, "HTTP requests to the intake API, by endpoint and status code.");
    describe_counter!(RESTARTS, "Actors restarted by their supervisor after a failure, by actor role.");
    describe_gauge!(INFLIGHT, "CDRs claimed by this process and not finished yet.");
    describe_counter!(DATABASE_ERRORS, "Errors returned by the CDR database (including restarted deadlocks).");
    describe_counter!(STORAGE_ERRORS, "Errors reading or writing CDR files or objects.");
    describe_histogram!(GROUP_COMMIT_SECONDS, Unit::Seconds, "Time to commit one group-commit batch, by role.");
    describe_histogram!(GROUP_COMMIT_BATCH, Unit::Count, "CDRs per group-commit batch, by role.");
    describe_counter!(TASK_OUTCOMES, "Task attempts by task type and result (done, retry, error, internal).");
    describe_histogram!(TASK_LATENCY, Unit::Seconds, "Time from a task's creation to done='y', by task type.");
    describe_gauge!(TASKS_INFLIGHT, "Tasks claimed by this process and not finished yet, by task type.");
    describe_counter!(
        CONNECTIONS_SHED,
        "HTTP connections closed at the connection cap: evicted (idle the longest) or refused (all busy)."
    );
    describe_gauge!(SPOOL_ROWS, "cdr_queue rows journaled locally while the database could not take them.");
    describe_counter!(
        INTAKE_CONFLICTS,
        "Re-posts of a queued CDR with other bytes, by what was kept (kept_first, replaced)."
    );
    describe_gauge!(
        SHARD_RESIDUES,
        "Shards (id residues) whose rows this process claims, by queue: 1 is its own; more is a takeover."
    );
    describe_counter!(SPOOL_BACKFILLED, "Spooled cdr_queue rows inserted into the database after an outage.");
    describe_gauge!(SHIP_PENDING, "CDR files in the shipped directories not yet accepted by intake.");
    describe_gauge!(SHIP_OLDEST_AGE, "Age (since last modified) of the oldest CDR file not yet accepted, 0 when none.");
    describe_counter!(SHIP_SENT, "CDR files intake accepted (2xx) and the shipper moved or removed.");
    describe_counter!(SHIP_REJECTED, "CDR files intake refused (4xx), moved to rejected/ with the reason.");
    describe_counter!(SHIP_RETRIES, "POSTs of a CDR file that got no answer or a 5xx and will be tried again.");
    describe_counter!(FIELD_WARNINGS, "CDR values that did not fit their field's type and were left empty, by field.");
}
