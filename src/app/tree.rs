//! The supervision tree of one process, wired once: every actor is given the mailboxes it
//! sends to here, and each level is the one `Supervisor` with its children in start order.
//!
//! ```text
//! root (SUBTREES)
//! ├── intake                 group commit of cdr_queue rows; wakes the queue poller
//! ├── backfill               spooled rows into the database once it answers again
//! ├── distiller (WORKERS)
//! │     ├── committer        the distilleries' group commit; wakes the task poller
//! │     ├── distillery_pool  ractor factory of distilleries (restarts, dead-man's switch)
//! │     └── queue_poller     claims cdr_queue rows under a lease, as the pool has room
//! ├── tasks (WORKERS)
//! │     ├── executor_<type>_pool × configured types (executor.threads workers each)
//! │     └── task_poller      claims tasks per type under a lease, as each pool has room
//! ├── heartbeat              this process's row in cdrmunch_nodes; which shards it claims
//! └── queue_metrics          the seed's queue gauges
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::actors::backfill::{BackfillActor, BackfillArgs};
use crate::actors::committer::{Committer, NormalizedBatch};
use crate::actors::distillery::{DistillerConfig, Distillery};
use crate::actors::group_commit::GroupCommitArgs;
use crate::actors::heartbeat::{Heartbeat, HeartbeatArgs};
use crate::actors::intake::{Intake, IntakeBatch, IntakeMsg};
use crate::actors::mailbox::Mailbox;
use crate::actors::poller::{CdrLane, PollerArgs, PollerMsg, QueuePoller, TaskLane, TaskPoller};
use crate::actors::pool::{pool, PoolSpec};
use crate::actors::queue_metrics::{QueueMetrics, QueueMetricsArgs};
use crate::actors::supervisor::{ChildSpec, RestartPolicy, SupervisorSpec};
use crate::actors::task_executor::{TaskContext, TaskExecutor};
use crate::actors::Hooks;
use crate::domain::shard::PeerWatch;
use crate::storage::BlobStore;
use crate::store::{Repository, Store};

/// How often the queue gauges are refreshed from the database.
pub const METRICS_REFRESH: Duration = Duration::from_secs(5);

/// A task worker gets this much beyond `tasksd.job_timeout_seconds` (which cuts the handler
/// off) before the dead-man's switch calls it hung: loading the CDR, recording the result.
const TASK_HANG_MARGIN: Duration = Duration::from_secs(60);

/// What the tree is built from.
pub struct Parts {
    pub store: Store,
    pub repo: Arc<dyn Repository>,
    pub raw_store: Arc<dyn BlobStore>,
    pub ncdr_store: Arc<dyn BlobStore>,
    pub intake_batch: usize,
    /// None when this process runs no intake role.
    pub intake: Option<Mailbox<IntakeMsg>>,
    /// The intake spool, when intake runs with one.
    pub spool: Option<Arc<crate::spool::Spool>>,
    /// How long intake gives the database before it spools a batch.
    pub intake_db_timeout: Duration,
    /// None when this process runs no distiller role.
    pub distiller: Option<DistillerConfig>,
    /// None when this process runs no tasks role.
    pub tasks: Option<Arc<TaskContext>>,
    /// None when this process claims nothing (intake only).
    pub heartbeat: Option<HeartbeatPlan>,
    pub hooks: Hooks,
}

/// How the heartbeat runs (see `app::heartbeat_plan`).
pub struct HeartbeatPlan {
    pub roles: String,
    pub interval: Duration,
    /// None: a silent shard is never taken over.
    pub takeover: Option<Duration>,
    pub settle: Duration,
    pub instance: String,
}

pub fn root(p: Parts) -> SupervisorSpec {
    let queue_poller = p.distiller.as_ref().map(|_| Mailbox::<PollerMsg>::new("queue poller"));
    let task_poller = p.tasks.as_ref().map(|_| Mailbox::<PollerMsg>::new("task poller"));
    let mut children = Vec::new();
    if let Some(intake) = &p.intake {
        let (repo, raw_store, wake, max_batch) =
            (p.repo.clone(), p.raw_store.clone(), queue_poller.clone(), p.intake_batch);
        let backfill = p.spool.as_ref().map(|spool| {
            let mailbox = Mailbox::new("backfill");
            let (spool, repo, wake) = (spool.clone(), p.repo.clone(), queue_poller.clone());
            let child = ChildSpec::actor("backfill", mailbox.clone(), move || {
                (BackfillActor, BackfillArgs { spool: spool.clone(), repo: repo.clone(), wake: wake.clone() })
            });
            (child, mailbox)
        });
        let spool = p.spool.clone().zip(backfill.as_ref().map(|b| b.1.clone()));
        let db_timeout = p.intake_db_timeout;
        children.push(
            ChildSpec::actor("intake", intake.clone(), move || {
                let batch = IntakeBatch {
                    repo: repo.clone(),
                    raw_store: raw_store.clone(),
                    wake: wake.clone(),
                    spool: spool.clone(),
                    db_timeout,
                };
                (Intake::default(), GroupCommitArgs { batch, max_batch })
            })
            .flushed(),
        );
        if let Some((child, _)) = backfill {
            children.push(child);
        }
    }
    if let (Some(config), Some(poller)) = (p.distiller.clone(), &queue_poller) {
        children.push(ChildSpec::supervisor(distiller(&p, config, poller.clone(), task_poller.clone())));
    }
    if let (Some(ctx), Some(poller)) = (p.tasks.clone(), &task_poller) {
        children.push(ChildSpec::supervisor(tasks(&p, ctx, poller.clone())));
    }
    if let Some(plan) = p.heartbeat {
        let (store, epoch) = (p.store.clone(), std::time::Instant::now());
        children.push(ChildSpec::actor("heartbeat", Mailbox::new("heartbeat"), move || {
            let ms = |d: Duration| d.as_millis() as u64;
            let watch = store
                .shard_filter()
                .shard()
                .map(|shard| PeerWatch::new(&plan.instance, shard, plan.takeover.map(ms), ms(plan.settle), 0));
            let args = HeartbeatArgs {
                store: store.clone(),
                roles: plan.roles.clone(),
                interval: plan.interval,
                watch,
                epoch,
            };
            (Heartbeat, args)
        }));
    }
    let store = p.store.clone();
    children.push(ChildSpec::actor("queue_metrics", Mailbox::new("queue metrics"), move || {
        (QueueMetrics, QueueMetricsArgs { store: store.clone(), interval: METRICS_REFRESH })
    }));
    SupervisorSpec { name: "root".into(), policy: RestartPolicy::SUBTREES, children }
}

fn distiller(
    p: &Parts,
    config: DistillerConfig,
    poller: Mailbox<PollerMsg>,
    task_poller: Option<Mailbox<PollerMsg>>,
) -> SupervisorSpec {
    let committer = Mailbox::new("committer");
    let (repo, ncdr_store, max_batch) = (p.repo.clone(), p.ncdr_store.clone(), config.distilleries);
    let committer_child = ChildSpec::actor("committer", committer.clone(), move || {
        let batch = NormalizedBatch { repo: repo.clone(), ncdr_store: ncdr_store.clone(), wake: task_poller.clone() };
        // every distillery waits on at most one commit
        (Committer::default(), GroupCommitArgs { batch, max_batch })
    })
    .flushed();
    let distillery = Distillery {
        repo: p.repo.clone(),
        raw_store: p.raw_store.clone(),
        ncdr_store: p.ncdr_store.clone(),
        config: config.clone(),
        hooks: p.hooks.clone(),
        committer: Some(committer),
    };
    let wake = poller.clone();
    let (pool_child, pool) = pool(PoolSpec {
        name: "distillery".into(),
        workers: config.distilleries,
        prefetch: config.prefetch,
        hang_after: config.job_timeout,
        work: Arc::new(distillery),
        on_done: Arc::new(move |_| {
            let _ = wake.send(PollerMsg::Finished(0));
        }),
    });
    let queue = p.repo.clone();
    let poller_child = ChildSpec::actor("queue_poller", poller, move || {
        let args = PollerArgs {
            lanes: vec![(CdrLane(queue.clone()), pool.clone())],
            poll_interval: config.poll_interval,
            batch: config.max_batch,
            lease: config.lease,
        };
        (QueuePoller::default(), args)
    });
    SupervisorSpec {
        name: "distiller".into(),
        policy: RestartPolicy::WORKERS,
        children: vec![committer_child, pool_child, poller_child],
    }
}

fn tasks(p: &Parts, ctx: Arc<TaskContext>, poller: Mailbox<PollerMsg>) -> SupervisorSpec {
    let mut children = Vec::new();
    let mut pools = Vec::new();
    let mut types: Vec<_> = ctx.handlers.keys().copied().collect();
    types.sort();
    for (lane, task_type) in types.into_iter().enumerate() {
        let wake = poller.clone();
        let (child, pool) = pool(PoolSpec {
            name: format!("executor_{task_type}"),
            workers: ctx.config.threads,
            prefetch: ctx.config.prefetch,
            hang_after: ctx.config.job_timeout + TASK_HANG_MARGIN,
            work: Arc::new(TaskExecutor { ctx: ctx.clone(), task_type }),
            on_done: Arc::new(move |_| {
                let _ = wake.send(PollerMsg::Finished(lane));
            }),
        });
        children.push(child);
        pools.push((task_type, pool));
    }
    let queue = p.repo.clone();
    children.push(ChildSpec::actor("task_poller", poller, move || {
        let args = PollerArgs {
            lanes: pools.iter().map(|(t, pool)| (TaskLane(queue.clone(), *t), pool.clone())).collect(),
            poll_interval: ctx.config.poll_interval,
            batch: ctx.config.batch,
            lease: ctx.config.lease,
        };
        (TaskPoller::default(), args)
    }));
    SupervisorSpec { name: "tasks".into(), policy: RestartPolicy::WORKERS, children }
}
