//! TaskExecutor: one per task type. It runs up to `executor.threads` attempts at once (a
//! semaphore its supervisor keeps across restarts), each in its own tokio task, so a slow
//! Salesforce never holds up billing. An attempt records its own result; a handler panic is
//! an internal failure of the task (retried) and takes the executor down with it, to be
//! restarted by the TaskSupervisor like a distillery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Semaphore;

use super::task_poller::TaskPollerMsg;
use super::{join, members, now, Fault, Hooks, Role};
use crate::domain::ncdr::NormalizedDoc;
use crate::domain::tasks::{RetryPolicy, TaskType};
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

/// Everything the task side needs; shared by the poller, the executors and step tests.
pub struct TaskContext {
    pub instance: String,
    pub repo: Arc<dyn Repository>,
    pub ncdr_store: Arc<dyn BlobStore>,
    pub handlers: HashMap<TaskType, Arc<dyn TaskHandler>>,
    pub config: TasksConfig,
    pub hooks: Hooks,
    /// Set on shutdown: attempts that have not started give their task back.
    pub draining: AtomicBool,
}

/// How one attempt ended, before it is written down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Done,
    Failed(HandlerError),
    /// The handler panicked (or its task was cancelled).
    Internal(String),
}

impl AttemptResult {
    pub fn label(&self) -> &'static str {
        match self {
            AttemptResult::Done => "done",
            AttemptResult::Failed(HandlerError::Retriable(_)) => "retriable",
            AttemptResult::Failed(HandlerError::Permanent(_)) => "permanent",
            AttemptResult::Internal(_) => "internal",
        }
    }
}

/// Reads the normalized CDR and the `<task>` the row points at. Failing to read is
/// retriable as the store says; a document that does not hold the task never will.
pub async fn load_job(ctx: &TaskContext, task: &ClaimedTask) -> Result<Job, HandlerError> {
    let bytes = ctx
        .ncdr_store
        .get(&task.ncdr_path)
        .await
        .map_err(|e| HandlerError::from_storage("reading normalized CDR", e))?;
    let permanent = |e: crate::domain::ncdr::NcdrError| HandlerError::Permanent(format!("{e} ({})", task.ncdr_path));
    let doc = NormalizedDoc::parse(&bytes).map_err(permanent)?;
    let node = doc.task(task.node_index, &task.task_type, &task.ncdr_path).map_err(permanent)?;
    Ok(Job { uuid: uuid::Uuid::from_bytes(task.uuid).to_string(), task: task.clone(), doc, node })
}

/// Runs the handler in its own tokio task, so a panic is caught as a `JoinError` and a hang
/// is cut off at `job_timeout`.
pub async fn attempt(ctx: &TaskContext, task: &ClaimedTask) -> AttemptResult {
    let handler = match task.task_type.parse::<TaskType>().ok().and_then(|t| ctx.handlers.get(&t)) {
        Some(h) => h.clone(),
        None => {
            let why = format!("no handler is configured for task type '{}'", task.task_type);
            return AttemptResult::Failed(HandlerError::Permanent(why));
        }
    };
    let job = match load_job(ctx, task).await {
        Ok(job) => job,
        Err(e) => return AttemptResult::Failed(e),
    };
    let fault = ctx.hooks.task_fault.as_ref().and_then(|h| h(task));
    let run = tokio::spawn(async move {
        match fault {
            Some(Fault::Panic) => panic!("injected handler fault for task {}", job.task.id),
            Some(Fault::Hang) => std::future::pending::<()>().await,
            None => {}
        }
        handler.run(&job).await
    });
    let abort = run.abort_handle();
    match tokio::time::timeout(ctx.config.job_timeout, run).await {
        Err(_) => {
            abort.abort();
            let why = format!("handler did not finish within {}s", ctx.config.job_timeout.as_secs());
            AttemptResult::Failed(HandlerError::Retriable(why))
        }
        Ok(Ok(Ok(()))) => AttemptResult::Done,
        Ok(Ok(Err(e))) => AttemptResult::Failed(e),
        Ok(Err(join)) if join.is_panic() => {
            let payload = join.into_panic();
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-text panic".into());
            AttemptResult::Internal(format!("handler panicked: {msg}"))
        }
        Ok(Err(join)) => AttemptResult::Internal(format!("handler task ended: {join}")),
    }
}

/// The row's next state: retriable failures and internal failures are retried (internal
/// ones after 1 s, as for CDRs) until `max_retries`, then `done='error'` with the last error.
pub fn decide(
    policy: &RetryPolicy,
    retry: u32,
    result: &AttemptResult,
    at: chrono::DateTime<chrono::Utc>,
) -> TaskFinish {
    let (delay, message) = match result {
        AttemptResult::Done => return TaskFinish::Done,
        AttemptResult::Failed(HandlerError::Permanent(m)) => return TaskFinish::Error { error: m.clone() },
        AttemptResult::Failed(HandlerError::Retriable(m)) => (policy.next_delay(retry), m.clone()),
        AttemptResult::Internal(m) => (policy.next_delay(retry).map(|_| 1), format!("internal failure: {m}")),
    };
    match delay {
        Some(secs) => TaskFinish::Retry { next_attempt: at + chrono::Duration::seconds(secs as i64), error: message },
        None => TaskFinish::Error { error: format!("gave up after {retry} retries: {message}") },
    }
}

/// One attempt start to end, recorded in `tasks` and in the metrics. The step function the
/// tests drive; the executor runs exactly this.
pub async fn execute(ctx: &TaskContext, task: &ClaimedTask) -> (AttemptResult, TaskFinish) {
    let result = attempt(ctx, task).await;
    let finish = decide(&ctx.config.retry, task.retry, &result, now());
    metrics::counter!(crate::telemetry::TASK_OUTCOMES, "task_type" => task.task_type.clone(), "outcome" => result.label())
        .increment(1);
    match &result {
        AttemptResult::Done => {
            let latency = (now() - task.create_time).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(crate::telemetry::TASK_LATENCY, "task_type" => task.task_type.clone()).record(latency);
            tracing::debug!(task_id = task.id, task_type = %task.task_type, "task done");
        }
        other => tracing::warn!(task_id = task.id, task_type = %task.task_type, "task attempt failed: {other:?}"),
    }
    match ctx.repo.finish_task(task.id, &finish).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(task_id = task.id, "task was finished elsewhere (lease expired?)"),
        Err(e) => tracing::error!(task_id = task.id, error = %e, "could not record task result; the lease will expire"),
    }
    (result, finish)
}

pub enum ExecutorMsg {
    Run(Vec<ClaimedTask>),
    /// An attempt's handler panicked: its task is recorded, now the executor goes down.
    Panicked {
        task_id: u64,
        message: String,
    },
}

pub struct ExecutorArgs {
    pub ctx: Arc<TaskContext>,
    pub task_type: TaskType,
    pub slots: Arc<Semaphore>,
}

pub struct TaskExecutor;

impl Actor for TaskExecutor {
    type Msg = ExecutorMsg;
    type State = ExecutorArgs;
    type Arguments = ExecutorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ExecutorMsg>,
        args: ExecutorArgs,
    ) -> Result<ExecutorArgs, ActorProcessingErr> {
        join(&args.ctx.instance, Role::Executor(args.task_type), myself.get_cell());
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<ExecutorMsg>,
        msg: ExecutorMsg,
        state: &mut ExecutorArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ExecutorMsg::Run(tasks) => {
                for task in tasks {
                    tokio::spawn(run_job(state.ctx.clone(), state.slots.clone(), task, myself.clone()));
                }
                Ok(())
            }
            ExecutorMsg::Panicked { task_id, message } => {
                Err(format!("{} executor: task {task_id}: {message}", state.task_type).into())
            }
        }
    }
}

/// Waits for a slot, runs one attempt, tells the poller (and, on a panic, the executor).
async fn run_job(ctx: Arc<TaskContext>, slots: Arc<Semaphore>, task: ClaimedTask, executor: ActorRef<ExecutorMsg>) {
    let Ok(_slot) = slots.acquire_owned().await else { return };
    let task_type = task.task_type.parse::<TaskType>().ok();
    if ctx.draining.load(Ordering::SeqCst) {
        if let Err(e) = ctx.repo.release_tasks(&[task.id], now()).await {
            tracing::warn!(task_id = task.id, error = %e, "could not release task; its lease will expire");
        }
    } else {
        let (result, _) = execute(&ctx, &task).await;
        if let AttemptResult::Internal(message) = result {
            let _ = executor.send_message(ExecutorMsg::Panicked { task_id: task.id, message });
        }
    }
    if let Some(t) = task_type {
        for poller in members::<TaskPollerMsg>(&ctx.instance, Role::TaskPoller) {
            let _ = poller.send_message(TaskPollerMsg::JobDone(t));
        }
    }
}
