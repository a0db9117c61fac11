//! Distillery: the seed's rmdistillery as an actor. One CDR at a time: load the raw CDR,
//! normalize it off the async threads, write `<cdr-normalized>` durably, then commit
//! `normalized_cdrs` + `tasks` + `done='y'` in one transaction. Whatever happens to the
//! CDR is decided as an `Outcome` and recorded; only infrastructure faults crash the actor.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::queue_poller::QueuePollerMsg;
use super::{now, DistillerConfig, Fault, Hooks};
use crate::domain::normalize::{normalize_document, NormalizeContext, NormalizeError, NormalizedCdr};
use crate::domain::outcome::{backoff_seconds, Outcome};
use crate::storage::{BlobStore, StorageError};
use crate::store::{CommitResult, NewNormalizedCdr, QueuedCdr, Repository};

/// Everything a distillery needs; shared by the pool and by tests that drive `distill`.
pub struct DistilleryContext {
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
        let outcome = distill(ctx, &job).await;
        let _ = reply_to.send_message(QueuePollerMsg::JobDone { distillery: myself.get_id(), cdr_id: job.id, outcome });
        Ok(())
    }
}

/// One CDR through the distillery, outcome recorded in the database. Step function: tests
/// call it directly to drive one claim → distill cycle without actors.
pub async fn distill(ctx: &DistilleryContext, job: &QueuedCdr) -> Outcome {
    let outcome = match try_distill(ctx, job).await {
        Ok(CommitResult::Committed { .. }) => Outcome::Successful,
        Ok(CommitResult::Duplicate) => Outcome::SuccessfulDuplicate,
        Err(outcome) => outcome,
    };
    let t = now();
    let recorded = match &outcome {
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
    match &outcome {
        Outcome::Successful | Outcome::SuccessfulDuplicate => {
            tracing::debug!(cdr_id = job.id, path = %job.path, "{}", outcome.label())
        }
        other => tracing::warn!(cdr_id = job.id, path = %job.path, "{other}"),
    }
    outcome
}

async fn try_distill(ctx: &DistilleryContext, job: &QueuedCdr) -> Result<CommitResult, Outcome> {
    let raw = ctx.raw_store.get(&job.path).await.map_err(|e| storage_outcome("reading raw CDR", e))?;
    let nctx = NormalizeContext {
        cdr_path: job.path.clone(),
        received_epoch: job.create_time,
        disabled_tasks: ctx.config.disabled_tasks.clone(),
    };
    // Parsing a large CDR is CPU work: keep it off the async worker threads.
    let normalized: NormalizedCdr = tokio::task::spawn_blocking(move || normalize_document(&raw, &nctx))
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
        .put(&normalized.storage_key(), normalized.to_xml().as_bytes())
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
    ctx.repo
        .commit_normalized(job.id, &row, now())
        .await
        .map_err(|e| Outcome::RetriableFailure(format!("committing normalized CDR: {e}")))
}

fn storage_outcome(doing: &str, e: StorageError) -> Outcome {
    if e.is_retriable() {
        Outcome::RetriableFailure(format!("{doing}: {e}"))
    } else {
        Outcome::PermanentFailure(format!("{doing}: {e}"))
    }
}
