//! TaskExecutor: the work of one task type's pool (`executor.threads` workers each), so a
//! slow Salesforce never holds up billing. An attempt reads the normalized CDR and its
//! `<task>`, runs the handler (cut off at `tasksd.job_timeout_seconds`), and records the
//! result: done, a retry after the backoff, or `done='error'`. A handler panic is the pool's
//! business: the worker is restarted and the attempt recorded here, in `crashed`, as an
//! internal failure retried soon.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::pool::{Crash, Work};
use super::{Fault, Hooks};
use crate::domain::ncdr::NormalizedDoc;
use crate::domain::outcome::{Outcome, RetryPolicy};
use crate::domain::tasks::TaskType;
use crate::events;
use crate::handlers::{HandlerError, Job, TaskHandler};
use crate::storage::BlobStore;
use crate::store::{ClaimedTask, Repository, TaskFinish};

/// tasksd's settings, resolved from config once.
#[derive(Debug, Clone)]
pub struct TasksConfig {
    pub threads: usize,
    pub poll_interval: Duration,
    pub batch: usize,
    pub lease: Duration,
    pub job_timeout: Duration,
    pub prefetch: usize,
    pub retry: RetryPolicy,
}

/// Everything the task side needs; shared by the executors of every type and by step tests.
pub struct TaskContext {
    pub repo: Arc<dyn Repository>,
    pub ncdr_store: Arc<dyn BlobStore>,
    pub handlers: HashMap<TaskType, Arc<dyn TaskHandler>>,
    pub config: TasksConfig,
    pub hooks: Hooks,
}

/// An internal failure (the worker died on the attempt) is due again this soon.
const CRASH_RETRY: Duration = Duration::from_secs(1);

/// Reads the normalized CDR and the `<task>` the row points at. Failing to read is
/// retriable as the store says; a document that does not hold the task never will.
pub async fn load_job(ctx: &TaskContext, task: &ClaimedTask) -> Result<Job, HandlerError> {
    let bytes =
        ctx.ncdr_store.get(&task.ncdr_path).await.map_err(|e| HandlerError::failed("reading normalized CDR", &e))?;
    let permanent = |e: crate::domain::ncdr::NcdrError| HandlerError::Permanent(format!("{e} ({})", task.ncdr_path));
    let doc = NormalizedDoc::parse(&bytes).map_err(permanent)?;
    let node = doc.task(task.node_index, task.task_type.as_str(), &task.ncdr_path).map_err(permanent)?;
    Ok(Job { uuid: uuid::Uuid::from_bytes(task.uuid).to_string(), task: task.clone(), doc, node })
}

/// Runs the handler, cut off at `job_timeout` (a slow peer: retriable). A panic is not
/// caught here: it is the worker's crash.
pub async fn attempt(ctx: &TaskContext, task: &ClaimedTask) -> Outcome {
    let Some(handler) = ctx.handlers.get(&task.task_type).cloned() else {
        return Outcome::PermanentFailure(format!("no handler is configured for task type '{}'", task.task_type));
    };
    let job = match load_job(ctx, task).await {
        Ok(job) => job,
        Err(e) => return e.into(),
    };
    let fault = ctx.hooks.task_fault.as_ref().and_then(|h| h(task));
    let run = async {
        match fault {
            Some(Fault::Panic) => panic!("injected handler fault for task {}", task.id),
            Some(Fault::Hang) => std::future::pending::<()>().await,
            Some(Fault::Sleep(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        handler.run(&job).await
    };
    match tokio::time::timeout(ctx.config.job_timeout, run).await {
        Err(_) => {
            Outcome::RetriableFailure(format!("handler did not finish within {}s", ctx.config.job_timeout.as_secs()))
        }
        Ok(Ok(())) => Outcome::Successful,
        Ok(Err(e)) => e.into(),
    }
}

/// The row's next state: retriable and internal failures are retried (internal ones after
/// a second, as for CDRs) until `max_retries`, then `done='error'` with the last error.
pub fn decide(policy: &RetryPolicy, retry: u32, outcome: &Outcome, at: chrono::DateTime<chrono::Utc>) -> TaskFinish {
    let (delay, message) = match outcome {
        Outcome::Successful | Outcome::SuccessfulDuplicate => return TaskFinish::Done,
        Outcome::PermanentFailure(m) => return TaskFinish::Error { error: m.clone() },
        Outcome::RetriableFailure(m) => (policy.next_delay(retry), m.clone()),
        Outcome::InternalFailure(m) => {
            (policy.next_delay(retry).map(|_| CRASH_RETRY), format!("internal failure: {m}"))
        }
    };
    match delay {
        Some(d) => TaskFinish::Retry { next_attempt: at + d, error: message },
        None => TaskFinish::Error { error: format!("gave up after {retry} retries: {message}") },
    }
}

/// One attempt start to end, recorded in `tasks` and in the metrics. The step function the
/// tests drive; the executor runs exactly this.
pub async fn execute(ctx: &TaskContext, task: &ClaimedTask) -> (Outcome, TaskFinish) {
    let outcome = attempt(ctx, task).await;
    let finish = record(ctx, task, &outcome).await;
    (outcome, finish)
}

async fn record(ctx: &TaskContext, task: &ClaimedTask, outcome: &Outcome) -> TaskFinish {
    let finish = decide(&ctx.config.retry, task.retry, outcome, chrono::Utc::now());
    events::TaskAttempted { task, outcome }.emit();
    match ctx.repo.finish_task(task.id, task.claim, &finish).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(task_id = task.id, "task was claimed again or finished elsewhere meanwhile"),
        Err(e) => tracing::error!(task_id = task.id, error = %e, "could not record task result; the lease will expire"),
    }
    finish
}

/// The work of one task type's pool.
pub struct TaskExecutor {
    pub ctx: Arc<TaskContext>,
    pub task_type: TaskType,
}

impl Work for TaskExecutor {
    type Job = ClaimedTask;

    fn key(task: &ClaimedTask) -> u64 {
        task.id
    }

    async fn run(&self, task: &ClaimedTask) {
        execute(&self.ctx, task).await;
    }

    async fn crashed(&self, task: &ClaimedTask, crash: &Crash) {
        record(&self.ctx, task, &Outcome::InternalFailure(format!("handler {crash}"))).await;
    }

    async fn give_back(&self, task: &ClaimedTask) {
        if let Err(e) = self.ctx.repo.release_tasks(&[task.id], chrono::Utc::now()).await {
            tracing::warn!(task_id = task.id, error = %e, "could not release task; its lease will expire");
        }
    }

    fn held(&self, n: usize) {
        events::TasksInFlight { task_type: self.task_type, n }.emit();
    }
}
