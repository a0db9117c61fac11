//! The operator commands: `status`, `retry`, `purge`, `replay` — the seed's health-check and
//! troubleshooting SQL as commands, so nobody types SQL at 3 a.m. Human tables by default,
//! `--json` for scripts.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::domain::outcome::Outcome;
use crate::storage::BlobStore;
use crate::store::{ErrorReport, QueueCounts, RowState, Store, TaskErrorReport};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Usage(String),
    /// The billing feed refused or failed a write.
    #[error("billing feed: {0}")]
    Billing(String),
}

/// `90d`, `12h`, `30m`, `45s`, `2w`: a duration in seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| format!("'{s}' is not a duration like 90d, 12h, 30m or 45s"))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("'{s}': unit must be s, m, h, d or w")),
    };
    Ok(n * mult)
}

/// `2026-11-01`, `2026-11-01T10:00:00`, `2026-11-01 10:00:00` (UTC) or epoch seconds.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(epoch) = s.parse::<i64>() {
        return DateTime::from_timestamp(epoch, 0).ok_or_else(|| format!("'{s}' is out of range"));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| format!("'{s}' is not a time: use 2026-11-01, 2026-11-01T10:00:00 (UTC) or epoch seconds"))
}

#[derive(Debug, Serialize)]
pub struct TaskLine {
    pub task_type: String,
    pub pending: u64,
    pub done: u64,
    pub error: u64,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub cdr_queue: QueueSummary,
    pub stuck_over_1h: u64,
    pub tasks: Vec<TaskLine>,
    pub recent_errors: Vec<ErrorReport>,
    pub recent_task_errors: Vec<TaskErrorReport>,
    /// Re-posts that differed from the queued CDR, newest first.
    pub intake_conflicts: Vec<crate::store::IntakeConflict>,
    /// The processes that claim work on this database (or its master-master pair).
    pub nodes: Vec<crate::store::NodeRow>,
}

#[derive(Debug, Serialize)]
pub struct QueueSummary {
    pub pending: u64,
    pub done: u64,
    pub error: u64,
}

impl From<QueueCounts> for QueueSummary {
    fn from(c: QueueCounts) -> Self {
        QueueSummary { pending: c.pending, done: c.done, error: c.error }
    }
}

/// The seed's health-check queries in one report.
pub async fn status(store: &Store, now: DateTime<Utc>, limit: u32) -> Result<Status, OpsError> {
    let ops = store;
    let mut tasks: Vec<TaskLine> = Vec::new();
    for (ty, done, n) in store.task_counts().await? {
        let line = match tasks.iter_mut().find(|l| l.task_type == ty.as_str()) {
            Some(l) => l,
            None => {
                tasks.push(TaskLine { task_type: ty.to_string(), pending: 0, done: 0, error: 0 });
                tasks.last_mut().expect("pushed")
            }
        };
        match done {
            RowState::Pending => line.pending += n,
            RowState::Done => line.done += n,
            RowState::Error => line.error += n,
        }
    }
    tasks.sort_by(|a, b| a.task_type.cmp(&b.task_type));
    Ok(Status {
        cdr_queue: store.queue_counts().await?.into(),
        stuck_over_1h: ops.stuck_cdrs(now.timestamp() - 3600).await?,
        tasks,
        recent_errors: ops.recent_errors(limit).await?,
        recent_task_errors: ops.recent_task_errors(limit).await?,
        intake_conflicts: ops.recent_conflicts(limit).await?,
        nodes: store.node_report().await?,
    })
}

/// Cuts a cell to `n` characters so one long error does not wreck the table.
fn cell(s: &str, n: usize) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        one_line.chars().take(n.saturating_sub(1)).collect::<String>() + "…"
    }
}

pub fn render_status(s: &Status) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let q = &s.cdr_queue;
    let _ = writeln!(
        o,
        "cdr_queue: {} pending, {} done, {} error; {} stuck over 1 hour",
        q.pending, q.done, q.error, s.stuck_over_1h
    );
    let _ = writeln!(o, "\ntasks:\n  {:<18} {:>9} {:>9} {:>9}", "TYPE", "PENDING", "DONE", "ERROR");
    if s.tasks.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for t in &s.tasks {
        let _ = writeln!(o, "  {:<18} {:>9} {:>9} {:>9}", t.task_type, t.pending, t.done, t.error);
    }
    let _ = writeln!(o, "\nrecent CDR errors:");
    if s.recent_errors.is_empty() {
        let _ = writeln!(o, "  (none)");
    } else {
        let _ = writeln!(
            o,
            "  {:<8} {:<36} {:<6} {:>5} {:<8} {:<19}  DESCRIPTION",
            "ID", "UUID", "DONE", "RETRY", "CRITICAL", "LAST ERROR"
        );
    }
    for e in &s.recent_errors {
        let _ = writeln!(
            o,
            "  {:<8} {:<36} {:<6} {:>5} {:<8} {:<19}  {}",
            e.id_cdr_queue,
            uuid::Uuid::from_bytes(e.uuid),
            e.done,
            e.retry,
            if e.critical { "yes" } else { "no" },
            e.last_error,
            cell(&e.description, 160)
        );
    }
    let _ = writeln!(o, "\nrecent task errors:");
    if s.recent_task_errors.is_empty() {
        let _ = writeln!(o, "  (none)");
    } else {
        let _ = writeln!(o, "  {:<8} {:<18} {:<36} {:>5}  ERROR", "ID", "TYPE", "UUID", "RETRY");
    }
    for t in &s.recent_task_errors {
        let _ = writeln!(
            o,
            "  {:<8} {:<18} {:<36} {:>5}  {}",
            t.id,
            t.task_type,
            uuid::Uuid::from_bytes(t.uuid),
            t.retry,
            cell(&t.error_message, 160)
        );
    }
    let _ = writeln!(
        o,
        "
re-posts that differed (the first kept unless it had failed):"
    );
    if s.intake_conflicts.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for c in &s.intake_conflicts {
        let _ = writeln!(o, "  {} {:<10} first {}  other {}", c.uuid, c.kind, c.first_path, c.other_path);
    }
    let _ = writeln!(o, "\nprocesses claiming work (heartbeats in cdrmunch_nodes):");
    if s.nodes.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for n in &s.nodes {
        let shard = n.shard.as_deref().unwrap_or("all");
        let _ = writeln!(
            o,
            "  {:<32} shard {:<6} {:<24} last beat {} ({} beats)",
            n.instance, shard, n.roles, n.last_beat, n.beats
        );
    }
    o
}

#[derive(Debug, Default, Serialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    pub cutoff: String,
    pub normalized_cdrs: u64,
    pub files: u64,
    pub bytes: u64,
    pub archived: u64,
    pub missing_files: u64,
}

/// The archive key of a normalized CDR: its `{hour}/{uuid}.xml`, the same whether the
/// source is a directory or S3.
fn archive_key(location: &str) -> Option<String> {
    let mut parts = location.rsplit('/');
    let file = parts.next().filter(|f| !f.is_empty())?;
    let hour = parts.next().filter(|h| !h.is_empty())?;
    Some(format!("{hour}/{file}"))
}

/// The seed's purge: normalized CDRs older than the cutoff whose tasks are all finished are
/// archived (when asked), their files deleted, then their rows (and task rows) deleted, in
/// batches. Interrupted, it resumes where it stopped: a file already gone is counted as
/// missing, and its row still goes.
pub async fn purge(
    store: &Store,
    ncdr: &dyn BlobStore,
    archive: Option<&dyn BlobStore>,
    cutoff: DateTime<Utc>,
    dry_run: bool,
    mut progress: impl FnMut(u64),
) -> Result<PurgeReport, OpsError> {
    let ops = store;
    let mut report =
        PurgeReport { dry_run, cutoff: cutoff.format("%Y-%m-%d %H:%M:%S UTC").to_string(), ..Default::default() };
    let mut after = 0;
    loop {
        let batch = ops.purge_candidates(cutoff, after, 500).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for c in &batch {
            let bytes = match ncdr.get(&c.path).await {
                Ok(b) => Some(b),
                Err(crate::storage::StorageError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let Some(bytes) = bytes else {
                report.missing_files += 1;
                continue;
            };
            report.files += 1;
            report.bytes += bytes.len() as u64;
            if dry_run {
                continue;
            }
            if let Some(archive) = archive {
                let key = archive_key(&c.path)
                    .ok_or_else(|| OpsError::Usage(format!("cannot derive an archive key from '{}'", c.path)))?;
                archive.put(&key, &bytes).await?;
                report.archived += 1;
            }
            ncdr.delete(&c.path).await?;
        }
        report.normalized_cdrs += batch.len() as u64;
        if !dry_run {
            ops.delete_normalized(&batch).await?;
        }
        progress(report.normalized_cdrs);
    }
    Ok(report)
}

#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub cdrs: u64,
    pub renormalized: u64,
    pub failed: u64,
    pub not_normalized: u64,
    pub tasks_added: u64,
    pub tasks_repointed: u64,
    pub tasks_dropped: u64,
    pub failures: Vec<String>,
}

/// Re-normalizes the CDRs received in `[from, to)` with today's rules — through the
/// distillery's own `prepare`, so exactly as the service would (the uuid check included):
/// the normalized XML is rewritten under its deterministic key, and task rows are reconciled
/// (tasks that ran stay as they are, new task types are added, pending ones no longer
/// derived are dropped). Running it twice changes nothing the second time.
pub async fn replay(
    store: &Store,
    raw: Arc<dyn BlobStore>,
    ncdr: Arc<dyn BlobStore>,
    settings: &Settings,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    mut progress: impl FnMut(u64),
) -> Result<ReplayReport, OpsError> {
    if to <= from {
        return Err(OpsError::Usage("--to must be after --from".into()));
    }
    let distillery = crate::app::standalone_distillery(settings, Arc::new(store.clone()), raw, ncdr.clone())
        .map_err(|e| OpsError::Usage(e.to_string()))?;
    let mut report = ReplayReport::default();
    let mut after = 0;
    loop {
        let batch = store.replay_candidates(from.timestamp(), to.timestamp(), after, 200).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for q in &batch {
            report.cdrs += 1;
            progress(report.cdrs);
            let Some((nid, _)) = store.normalized_of(q.uuid).await? else {
                report.not_normalized += 1; // purged, or a duplicate queue row of a call normalized before
                continue;
            };
            let prepared = match distillery.prepare(q).await {
                Ok(p) => p,
                Err(
                    Outcome::RetriableFailure(why) | Outcome::PermanentFailure(why) | Outcome::InternalFailure(why),
                ) => {
                    report.failed += 1;
                    report.failures.push(format!("cdr_queue {}: {why}", q.id));
                    continue;
                }
                Err(other) => unreachable!("prepare ends before the commit: {other}"),
            };
            ncdr.sync(std::slice::from_ref(&prepared.row.path)).await?;
            let r = store.renormalized(nid, &prepared.row, Utc::now()).await?;
            report.renormalized += 1;
            report.tasks_added += r.added;
            report.tasks_repointed += r.repointed;
            report.tasks_dropped += r.dropped;
        }
    }
    Ok(report)
}

/// Opens the stores a config names (for the CLI).
pub async fn stores(settings: &Settings) -> Result<(Arc<dyn BlobStore>, Arc<dyn BlobStore>), OpsError> {
    let raw = crate::storage::open(&settings.distiller.cdr_base_dir.to_string_lossy(), &settings.s3).await?;
    let ncdr =
        crate::storage::open(&settings.distiller.normalized_cdr_base_dir.to_string_lossy(), &settings.s3).await?;
    Ok((raw, ncdr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_times_and_archive_keys() {
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("3 fortnights").is_err());
        assert_eq!(parse_time("2026-11-01").unwrap().timestamp(), 1_793_491_200);
        assert_eq!(parse_time("2026-11-01T10:00:00").unwrap().timestamp(), 1_793_491_200 + 36_000);
        assert_eq!(parse_time("1700000000").unwrap().timestamp(), 1_700_000_000);
        assert!(parse_time("yesterday").unwrap_err().contains("epoch seconds"));
        assert_eq!(archive_key("/data/ncdr/20231114T2200/u.xml").as_deref(), Some("20231114T2200/u.xml"));
        assert_eq!(archive_key("s3://b/ncdr/20231114T2200/u.xml").as_deref(), Some("20231114T2200/u.xml"));
        assert_eq!(cell("a\nb", 10), "a b");
        assert_eq!(cell("abcdef", 4), "abc…");
    }
}
