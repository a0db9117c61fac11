//! Distillery: the seed's rmdistillery as an actor. One CDR at a time: load the raw CDR,
//! normalize it (a large one on the blocking pool), write `<cdr-normalized>`, then hand it to
//! the Committer, whose one transaction per batch inserts `normalized_cdrs` + `tasks` and sets
//! `done='y'`. Whatever happens to the CDR is decided as an `Outcome` and recorded; only
//! infrastructure faults crash the actor.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::committer::{commit_prepared, NormalizedBatch, Prepared};
use super::group_commit;
use super::queue_poller::QueuePollerMsg;
use super::{cpu_bound, now, DistillerConfig, Fault, Hooks};
use crate::domain::normalize::{normalize_document, NormalizeContext, NormalizeError, NormalizedCdr};
use crate::domain::outcome::{backoff_seconds, Outcome};
use crate::storage::{BlobStore, StorageError};
use crate::store::{CommitResult, NewNormalizedCdr, QueuedCdr, Repository};

/// Everything a distillery needs; shared by the pool and by tests that drive `distill`.
pub struct DistilleryContext {
    /// The running instance, to find the committer.
    pub instance: String,
    pub repo: Arc<dyn Repository>,
    pub raw_store: Arc<dyn BlobStore>,
    pub ncdr_store: Arc<dyn BlobStore>,
    pub config: DistillerConfig,
    pub hooks: Hooks,
}

pub enum DistilleryMsg {
    Distill { job: QueuedCdr, reply_to: ActorRef<QueuePollerMsg> },
}

pub struct Distillery;

impl Actor for Distillery {
    type Msg = DistilleryMsg;
    type State = Arc<DistilleryContext>;
    type Arguments = Arc<DistilleryContext>;

    async fn pre_start(
        &self,
        _myself: ActorRef<DistilleryMsg>,
        ctx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ctx)
    }

    async fn handle(
        &self,
        myself: ActorRef<DistilleryMsg>,
        msg: DistilleryMsg,
        ctx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let DistilleryMsg::Distill { job, reply_to } = msg;
        match ctx.hooks.distillery_fault.as_ref().and_then(|h| h(&job)) {
            Some(Fault::Panic) => panic!("injected distillery fault for cdr_queue.id {}", job.id),
            Some(Fault::Hang) => std::future::pending::<()>().await,
            None => {}
        }
        let outcome = match prepare(ctx, &job).await {
            Ok(prepared) => {
                let committed = group_commit::submit::<NormalizedBatch>(&ctx.instance, prepared, COMMIT_TIMEOUT).await;
                commit_outcome(committed)
            }
            Err(outcome) => outcome,
        };
        record(ctx, &job, &outcome).await;
        let _ = reply_to.send_message(QueuePollerMsg::JobDone { distillery: myself.get_id(), cdr_id: job.id, outcome });
        Ok(())
    }
}

/// How long a distillery waits for the committer before calling it a retriable failure.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// One CDR through the distillery, committed on its own, outcome recorded in the database.
/// Step function: tests call it directly to drive one claim → distill cycle without actors.
pub async fn distill(ctx: &DistilleryContext, job: &QueuedCdr) -> Outcome {
    let outcome = match prepare(ctx, job).await {
        Ok(prepared) => {
            let mut results = commit_prepared(&*ctx.repo, &*ctx.ncdr_store, &[prepared]).await;
            commit_outcome(results.pop().unwrap_or_else(|| Err("no commit result".into())))
        }
        Err(outcome) => outcome,
    };
    record(ctx, job, &outcome).await;
    outcome
}

fn commit_outcome(committed: Result<CommitResult, String>) -> Outcome {
    match committed {
        Ok(CommitResult::Committed { .. }) => Outcome::Successful,
        Ok(CommitResult::Duplicate) => Outcome::SuccessfulDuplicate,
        Err(e) => Outcome::RetriableFailure(e),
    }
}

/// Writes what an outcome means for the queue row: nothing more for a success (the commit
/// did it), `done='error'` for a permanent failure, a backed-off retry for a retriable one.
pub async fn record(ctx: &DistilleryContext, job: &QueuedCdr, outcome: &Outcome) {
    crate::telemetry::outcome(outcome.label());
    let t = now();
    let recorded = match outcome {
        Outcome::PermanentFailure(why) => ctx.repo.mark_error(job.id, why, false, t).await,
        Outcome::RetriableFailure(why) => {
            let wait = backoff_seconds(job.retry, ctx.config.retry_backoff_base, ctx.config.retry_backoff_max);
            ctx.repo.schedule_retry(job.id, t + chrono::Duration::seconds(wait as i64), why, t).await
        }
        _ => Ok(()),
    };
    if let Err(e) = recorded {
        // The lease runs out and the CDR is claimed again: nothing is lost.
        tracing::error!(cdr_id = job.id, error = %e, "could not record outcome {}", outcome.label());
    }
    match outcome {
        Outcome::Successful | Outcome::SuccessfulDuplicate => {
            tracing::debug!(cdr_id = job.id, path = %job.path, "{}", outcome.label())
        }
        other => tracing::warn!(cdr_id = job.id, path = %job.path, "{other}"),
    }
}

/// Load, normalize and write the normalized XML (unsynced): everything before the commit.
pub async fn prepare(ctx: &DistilleryContext, job: &QueuedCdr) -> Result<Prepared, Outcome> {
    let raw = ctx.raw_store.get(&job.path).await.map_err(|e| storage_outcome("reading raw CDR", e))?;
    let nctx = NormalizeContext {
        cdr_path: job.path.clone(),
        received_epoch: job.create_time,
        ..ctx.config.normalize.clone()
    };
    // A large CDR is parsed on the blocking pool, a typical one inline.
    let normalized: NormalizedCdr = cpu_bound(raw.len(), move || normalize_document(&raw, &nctx))
        .await
        .map_err(|e| Outcome::InternalFailure(format!("normalizer task failed: {e}")))?
        .map_err(|e: NormalizeError| Outcome::PermanentFailure(format!("{e} (raw CDR {})", job.path)))?;
    if normalized.uuid_bytes != job.uuid {
        return Err(Outcome::PermanentFailure(format!(
            "raw CDR {} holds call uuid {}, but cdr_queue.uuid is {}",
            job.path,
            normalized.uuid,
            uuid::Uuid::from_bytes(job.uuid)
        )));
    }
    let location = ctx
        .ncdr_store
        .put_unsynced(&normalized.storage_key(), normalized.to_xml().as_bytes())
        .await
        .map_err(|e| storage_outcome("writing normalized CDR", e))?;
    let row = NewNormalizedCdr {
        uuid: normalized.uuid_bytes,
        path: location,
        cdr_path: job.path.clone(),
        table_suffix: normalized.table_suffix,
        org_id: normalized.org_id,
        tasks: normalized.task_rows(),
    };
    Ok(Prepared { cdr_id: job.id, row })
}

fn storage_outcome(doing: &str, e: StorageError) -> Outcome {
    if e.is_retriable() {
        Outcome::RetriableFailure(format!("{doing}: {e}"))
    } else {
        Outcome::PermanentFailure(format!("{doing}: {e}"))
    }
}
