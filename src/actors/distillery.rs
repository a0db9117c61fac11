//! Distillery: the seed's rmdistillery, the work of the distillery pool. One CDR at a time:
//! load the raw CDR, normalize it (a large one on the blocking pool), write
//! `<cdr-normalized>`, hand it to the Committer, whose one transaction per batch inserts
//! `normalized_cdrs` + `tasks` and sets `done='y'`. Whatever happens to the CDR is decided as
//! an `Outcome` and recorded with its row; a panic or a hang is the pool's business (the
//! worker is restarted and the crash recorded here, in `crashed`).

use std::sync::Arc;
use std::time::Duration;

use super::committer::{commit_prepared, CommitterMsg, Prepared};
use super::group_commit::submit;
use super::mailbox::Mailbox;
use super::pool::{Crash, Work};
use super::{cpu_bound, Fault, Hooks};
use crate::domain::normalize::{normalize_document, NormalizeContext, NormalizedCdr};
use crate::domain::outcome::{Backoff, Outcome};
use crate::events;
use crate::storage::BlobStore;
use crate::store::{CommitResult, NewNormalizedCdr, QueuedCdr, Repository};

/// The distiller's settings, resolved from config once.
#[derive(Debug, Clone)]
pub struct DistillerConfig {
    pub distilleries: usize,
    pub poll_interval: Duration,
    pub max_batch: usize,
    pub lease: Duration,
    pub job_timeout: Duration,
    /// `distiller.retry_backoff_seconds` / `_max_seconds`.
    pub backoff: Backoff,
    pub poison_threshold: u32,
    pub prefetch: usize,
    /// The normalizer's configuration (task rules, rate deck, field map, org directory);
    /// each CDR's path and receipt time are filled in per job.
    pub normalize: NormalizeContext,
}

/// How long a distillery waits for the committer before calling it a retriable failure.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// A CDR whose distillery died is due again this soon ("restart distillery, retry soon").
const CRASH_RETRY: Duration = Duration::from_secs(1);

/// Everything a distillery needs. The pool's workers share one; tests drive `distill`.
pub struct Distillery {
    pub repo: Arc<dyn Repository>,
    pub raw_store: Arc<dyn BlobStore>,
    pub ncdr_store: Arc<dyn BlobStore>,
    pub config: DistillerConfig,
    pub hooks: Hooks,
    /// The group commit; without one (a step test, `replay`) each CDR commits on its own.
    pub committer: Option<Mailbox<CommitterMsg>>,
}

impl Distillery {
    /// One CDR through the distillery, committed and its outcome recorded in the database.
    /// The step function: the pool runs exactly this, tests call it directly.
    pub async fn distill(&self, job: &QueuedCdr) -> Outcome {
        let fault = self.hooks.distillery_fault.as_ref().and_then(|h| h(job));
        match fault {
            Some(Fault::Hang) => std::future::pending::<()>().await,
            Some(Fault::Sleep(d)) => tokio::time::sleep(d).await,
            _ => {}
        }
        let outcome = match self.prepare_with(job, fault).await {
            Ok(prepared) => self.commit(prepared).await,
            Err(outcome) => outcome,
        };
        self.record(job, &outcome).await;
        outcome
    }

    async fn commit(&self, prepared: Prepared) -> Outcome {
        let committed = match &self.committer {
            Some(committer) => submit(committer, prepared, COMMIT_TIMEOUT).await,
            None => commit_prepared(&*self.repo, &*self.ncdr_store, std::slice::from_ref(&prepared))
                .await
                .map(|mut results| results.remove(0)),
        };
        match committed {
            Ok(CommitResult::Committed { .. }) => Outcome::Successful,
            Ok(CommitResult::Duplicate) => Outcome::SuccessfulDuplicate,
            Err(e) => Outcome::failed("committing", &e),
        }
    }

    /// Writes what an outcome means for the queue row: nothing more for a success (the
    /// commit did it), `done='error'` for a permanent failure, a backed-off retry for a
    /// retriable one.
    async fn record(&self, job: &QueuedCdr, outcome: &Outcome) {
        events::CdrDistilled { cdr_id: job.id, path: &job.path, outcome }.emit();
        let now = chrono::Utc::now();
        let recorded = match outcome {
            Outcome::PermanentFailure(why) => self.repo.mark_error(job.id, why, now).await,
            Outcome::RetriableFailure(_) => {
                let wait = self.config.backoff.delay(job.retry);
                self.repo.schedule_retry(job.id, now + wait, &outcome.to_string(), now).await
            }
            _ => Ok(()),
        };
        if let Err(e) = recorded {
            // The lease runs out and the CDR is claimed again: nothing is lost.
            tracing::error!(cdr_id = job.id, error = %e, "could not record outcome {}", outcome.label());
        }
    }

    /// Load, normalize and write the normalized XML (not yet synced): everything before the
    /// commit. `replay` runs it too, with today's rules.
    pub async fn prepare(&self, job: &QueuedCdr) -> Result<Prepared, Outcome> {
        self.prepare_with(job, None).await
    }

    async fn prepare_with(&self, job: &QueuedCdr, fault: Option<Fault>) -> Result<Prepared, Outcome> {
        let raw = self.raw_store.get(&job.path).await.map_err(|e| Outcome::failed("reading raw CDR", &e))?;
        let ctx = NormalizeContext {
            cdr_path: job.path.clone(),
            received_epoch: job.create_time,
            ..self.config.normalize.clone()
        };
        let cdr_id = job.id;
        // A large CDR is parsed on the blocking pool, a typical one inline; a panic in either
        // is the worker's crash, the same whatever the size.
        let normalized: NormalizedCdr = cpu_bound(raw.len(), move || {
            if fault == Some(Fault::Panic) {
                panic!("injected distillery fault for cdr_queue.id {cdr_id}");
            }
            normalize_document(&raw, &ctx)
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        .map_err(|e| Outcome::PermanentFailure(format!("{e} (raw CDR {})", job.path)))?;
        for warning in &normalized.warnings {
            events::FieldWarned { uuid: &normalized.uuid, warning }.emit();
        }
        if normalized.uuid_bytes != job.uuid {
            return Err(Outcome::PermanentFailure(format!(
                "raw CDR {} holds call uuid {}, but cdr_queue.uuid is {}",
                job.path,
                normalized.uuid,
                uuid::Uuid::from_bytes(job.uuid)
            )));
        }
        let location = self
            .ncdr_store
            .put_unsynced(&normalized.storage_key(), normalized.to_xml().as_bytes())
            .await
            .map_err(|e| Outcome::failed("writing normalized CDR", &e))?;
        let row = NewNormalizedCdr {
            uuid: normalized.uuid_bytes,
            path: location,
            cdr_path: job.path.clone(),
            table_suffix: normalized.table_suffix,
            org_id: normalized.org_id,
            tasks: normalized.task_rows(),
            links: Some(normalized.leg_facts()),
        };
        Ok(Prepared { cdr_id: job.id, row })
    }
}

impl Work for Distillery {
    type Job = QueuedCdr;

    fn key(job: &QueuedCdr) -> u64 {
        job.id
    }

    async fn run(&self, job: &QueuedCdr) {
        self.distill(job).await;
    }

    /// The seed's "restart distillery, retry soon": due again in a second, unless this CDR
    /// has now taken down `distiller.poison_threshold` distilleries (counted in its row).
    async fn crashed(&self, job: &QueuedCdr, crash: &Crash) {
        let reason = format!("distillery {crash}");
        let now = chrono::Utc::now();
        let threshold = self.config.poison_threshold;
        match self.repo.record_crash(job.id, &reason, threshold, now + CRASH_RETRY, now).await {
            Ok(crash) => events::CdrCrashed { cdr_id: job.id, path: &job.path, reason: &reason, crash }.emit(),
            // The lease runs out and the CDR is claimed again.
            Err(e) => tracing::error!(cdr_id = job.id, error = %e, "could not record internal failure ({reason})"),
        }
    }

    async fn give_back(&self, job: &QueuedCdr) {
        if let Err(e) = self.repo.release_claims(&[job.id]).await {
            tracing::warn!(cdr_id = job.id, error = %e, "could not release claim; its lease will expire");
        }
    }

    fn held(&self, n: usize) {
        events::CdrsInFlight(n).emit();
    }
}
