//! Worker pools: ractor's `factory` — its queue, its worker restarts, its dead-man's switch
//! for hung workers, its drain — plus the one thing a factory leaves to its user: the job a
//! dying worker was on is lost to it. Here a worker notes its job before running it, and the
//! worker built to replace it records that job's internal failure before taking new work.
//! So every job ends the same way whatever its size or what killed the worker (a panic
//! inline or on the blocking pool, a hang the dead-man's switch cut off): the worker is
//! restarted, the restart is counted, and the job's crash is written with its row.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ractor::factory::queues::DefaultQueue;
use ractor::factory::routing::QueuerRouting;
use ractor::factory::{
    worker_builder, DeadMansSwitchConfiguration, DiscardHandler, DiscardMode, DiscardReason, DiscardSettings, Factory,
    FactoryArguments, FactoryLifecycleHooks, FactoryMessage, Job, Worker, WorkerId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::mailbox::Mailbox;
use super::supervisor::{ChildSpec, RestartPolicy, RestartTracker};
use crate::events;

/// One kind of work a pool runs: a claimed `cdr_queue` row, a claimed task.
pub trait Work: Send + Sync + 'static {
    type Job: Clone + std::fmt::Debug + Send + Sync + 'static;

    /// The row id: the factory's job key.
    fn key(job: &Self::Job) -> u64;

    /// Runs one job to its recorded end (the row says what became of it). A panic in here
    /// is the worker's crash.
    fn run(&self, job: &Self::Job) -> impl Future<Output = ()> + Send;

    /// The worker died on `job`: record the internal failure with its row.
    fn crashed(&self, job: &Self::Job, crash: &Crash) -> impl Future<Output = ()> + Send;

    /// Claimed but never started (the pool is draining, or refused the job): due again now.
    fn give_back(&self, job: &Self::Job) -> impl Future<Output = ()> + Send;

    /// How many jobs the pool holds, queued and running: for the in-flight gauge.
    fn held(&self, n: usize);
}

/// Called whenever a job leaves a pool.
pub type OnDone<J> = Arc<dyn Fn(&J) + Send + Sync>;

/// How a worker died on its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crash {
    Panicked(String),
    /// The dead-man's switch killed it after this long on one job.
    Hung(Duration),
    /// It stopped for another reason (killed from outside).
    Stopped,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Crash::Panicked(message) => write!(f, "panicked: {message}"),
            Crash::Hung(after) => write!(f, "hung for more than {}s and was killed", after.as_secs()),
            Crash::Stopped => f.write_str("was stopped mid-job"),
        }
    }
}

/// A pool's shape.
pub struct PoolSpec<W: Work> {
    /// Its workers' restarts are counted under this `actor` label ("distillery",
    /// "executor_billing"); the pool itself is supervised as "<name>_pool".
    pub name: String,
    pub workers: usize,
    /// Jobs the pool holds per worker, the running one included: the poller's claim size.
    pub prefetch: usize,
    /// A worker busy longer than this on one job is killed by the dead-man's switch.
    pub hang_after: Duration,
    pub work: Arc<W>,
    /// Called whenever a job leaves the pool, however it ended: its poller may claim more.
    pub on_done: OnDone<W::Job>,
}

type PoolFactory<W> = Factory<
    u64,
    <W as Work>::Job,
    (),
    PoolWorker<W>,
    QueuerRouting<u64, <W as Work>::Job>,
    DefaultQueue<u64, <W as Work>::Job>,
>;

/// What a poller holds: the pool's factory, across the pool's restarts.
pub struct Pool<W: Work> {
    factory: Mailbox<FactoryMessage<u64, W::Job>>,
    capacity: usize,
    shared: Arc<Mutex<Option<Arc<Shared<W>>>>>,
}

impl<W: Work> Clone for Pool<W> {
    fn clone(&self) -> Self {
        Pool { factory: self.factory.clone(), capacity: self.capacity, shared: self.shared.clone() }
    }
}

impl<W: Work> Pool<W> {
    /// Jobs the pool holds when full.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Free places now, from the factory itself (idle workers and queue room); 0 while the
    /// pool restarts.
    pub async fn room(&self) -> usize {
        self.factory.call(FactoryMessage::GetAvailableCapacity, Duration::from_secs(5)).await.unwrap_or_default()
    }

    /// Hands a job to the pool; gives it back when the pool is not there to take it.
    pub fn dispatch(&self, job: W::Job) -> Result<(), W::Job> {
        let shared = self.shared.lock().ok().and_then(|s| s.clone());
        let Some(shared) = shared else { return Err(job) };
        let key = W::key(&job);
        // counted before it is sent: a worker may finish it before `send` returns
        shared.hold(key);
        match self.factory.send(FactoryMessage::Dispatch(Job::new(key, job.clone()))) {
            Ok(()) => Ok(()),
            Err(_) => {
                shared.release(key);
                Err(job)
            }
        }
    }

    /// The keys of the jobs the pool holds, queued or running: the claims whose leases its
    /// poller renews. A pool that restarted forgets the jobs it lost, so their leases run out.
    pub fn held_keys(&self) -> Vec<u64> {
        let shared = self.shared.lock().ok().and_then(|s| s.clone());
        shared.map(|s| s.keys.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()).unwrap_or_default()
    }
}

/// What outlives one worker: the job each worker is on, its restarts, the drain flag.
struct Shared<W: Work> {
    name: String,
    hang_after: Duration,
    work: Arc<W>,
    on_done: OnDone<W::Job>,
    slots: Mutex<Vec<Slot<W::Job>>>,
    restarts: Mutex<RestartTracker>,
    draining: AtomicBool,
    held: AtomicUsize,
    /// Held jobs by key, with how many times each is held (a task made due again while it
    /// runs is claimed a second time).
    keys: Mutex<HashMap<u64, usize>>,
}

/// One worker place: whether a worker ever started there, and what it is doing.
struct Slot<J> {
    started: bool,
    job: Option<(J, Instant)>,
    panic: Option<String>,
}

impl<W: Work> Shared<W> {
    fn slot<T>(&self, wid: WorkerId, f: impl FnOnce(&mut Slot<W::Job>) -> T) -> T {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() <= wid {
            slots.resize_with(wid + 1, || Slot { started: false, job: None, panic: None });
        }
        f(&mut slots[wid])
    }

    fn hold(&self, key: u64) {
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default() += 1;
        self.work.held(self.held.fetch_add(1, Ordering::SeqCst) + 1);
    }

    fn release(&self, key: u64) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = keys.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                keys.remove(&key);
            }
        }
        drop(keys);
        self.work.held(self.held.fetch_sub(1, Ordering::SeqCst).saturating_sub(1));
    }

    /// A job left the pool.
    fn done(&self, job: &W::Job) {
        self.release(W::key(job));
        (self.on_done)(job);
    }

    /// The factory (re)builds the worker of place `wid`: what the previous one left behind.
    fn build(self: &Arc<Self>, wid: WorkerId) -> PoolWorker<W> {
        let (restart, orphan) = self.slot(wid, |s| {
            let restart = std::mem::replace(&mut s.started, true);
            let panic = s.panic.take();
            let orphan = s.job.take().map(|(job, since)| {
                let crash = match panic {
                    Some(message) => Crash::Panicked(message),
                    None if since.elapsed() >= self.hang_after => Crash::Hung(self.hang_after),
                    None => Crash::Stopped,
                };
                (job, crash)
            });
            (restart, orphan)
        });
        let mut refuse = None;
        if restart {
            let reason = orphan.as_ref().map(|(_, c)| c.to_string()).unwrap_or_else(|| "stopped".into());
            let tracker = self.restarts.lock().map(|mut t| t.on_failure(Instant::now()));
            match tracker {
                Ok(Some(_)) => {
                    events::ActorRestarted { actor: &self.name, reason: &reason, delay: Duration::ZERO }.emit()
                }
                _ => refuse = Some(format!("{} workers keep dying ({reason}); the pool gives up", self.name)),
            }
        }
        PoolWorker { shared: self.clone(), orphan, refuse }
    }
}

/// One worker of a pool.
pub struct PoolWorker<W: Work> {
    shared: Arc<Shared<W>>,
    /// The job the previous worker of this place died on.
    orphan: Option<(W::Job, Crash)>,
    /// Set when workers died too often: this one fails to start, which fails the pool, which
    /// its supervisor restarts or escalates.
    refuse: Option<String>,
}

impl<W: Work> Worker for PoolWorker<W> {
    type Key = u64;
    type Message = W::Job;
    type Arguments = ();
    type State = ();

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<u64, W::Job>>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        // the crash is recorded even by a worker that then refuses to start
        if let Some((job, crash)) = &self.orphan {
            self.shared.work.crashed(job, crash).await;
            self.shared.done(job);
        }
        match &self.refuse {
            Some(why) => Err(why.clone().into()),
            None => Ok(()),
        }
    }

    async fn handle(
        &self,
        wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<u64, W::Job>>,
        job: Job<u64, W::Job>,
        _: &mut (),
    ) -> Result<u64, ActorProcessingErr> {
        let shared = &self.shared;
        if shared.draining.load(Ordering::SeqCst) {
            shared.work.give_back(&job.msg).await;
            shared.done(&job.msg);
            return Ok(job.key);
        }
        shared.slot(wid, |s| s.job = Some((job.msg.clone(), Instant::now())));
        match AssertUnwindSafe(shared.work.run(&job.msg)).catch_unwind().await {
            Ok(()) => {
                shared.slot(wid, |s| s.job = None);
                shared.done(&job.msg);
                Ok(job.key)
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                shared.slot(wid, |s| s.panic = Some(message.clone()));
                Err(format!("{} panicked: {message}", shared.name).into())
            }
        }
    }
}

pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-text panic".into())
}

/// Jobs the factory refuses (dispatched while it drains, or past its queue) go back.
struct GiveBack<W: Work>(Arc<Shared<W>>);

impl<W: Work> DiscardHandler<u64, W::Job> for GiveBack<W> {
    fn discard(&self, reason: DiscardReason, job: &mut Job<u64, W::Job>) {
        tracing::debug!(pool = %self.0.name, job = job.key, "job refused ({reason:?}); giving it back");
        let (shared, job) = (self.0.clone(), job.msg.clone());
        tokio::spawn(async move {
            shared.work.give_back(&job).await;
            shared.done(&job);
        });
    }
}

/// Raises the drain flag: jobs still queued are given back instead of run.
struct DrainFlag<W: Work>(Arc<Shared<W>>);

impl<W: Work> FactoryLifecycleHooks<u64, W::Job> for DrainFlag<W> {
    fn on_factory_draining(
        &self,
        _factory: ActorRef<FactoryMessage<u64, W::Job>>,
    ) -> futures::future::BoxFuture<'_, Result<(), ActorProcessingErr>> {
        self.0.draining.store(true, Ordering::SeqCst);
        async { Ok(()) }.boxed()
    }
}

/// The pool as a supervised child, and the handle its poller dispatches through.
pub fn pool<W: Work>(spec: PoolSpec<W>) -> (ChildSpec, Pool<W>) {
    let prefetch = spec.prefetch.max(1);
    let workers = spec.workers.max(1);
    let handle = Pool { factory: Mailbox::new("worker pool"), capacity: workers * prefetch, shared: Arc::default() };
    let name = format!("{}_pool", spec.name);
    let spec = Arc::new(spec);
    let (factory_box, current) = (handle.factory.clone(), handle.shared.clone());
    let start: super::supervisor::StartFn = Box::new(move |sup| {
        let shared = Arc::new(Shared {
            name: spec.name.clone(),
            hang_after: spec.hang_after,
            work: spec.work.clone(),
            on_done: spec.on_done.clone(),
            slots: Mutex::new(Vec::new()),
            restarts: Mutex::new(RestartTracker::new(RestartPolicy::WORKERS)),
            draining: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            keys: Mutex::new(HashMap::new()),
        });
        let builder = {
            let shared = shared.clone();
            worker_builder(move |wid| (shared.build(wid), ()))
        };
        let args = FactoryArguments::builder()
            .worker_builder(Box::new(builder))
            .num_initial_workers(workers)
            .queue(DefaultQueue::default())
            .router(QueuerRouting::default())
            .discard_settings(DiscardSettings::Static { limit: workers * (prefetch - 1), mode: DiscardMode::Newest })
            .discard_handler(Arc::new(GiveBack(shared.clone())) as Arc<dyn DiscardHandler<u64, W::Job>>)
            .lifecycle_hooks(Box::new(DrainFlag(shared.clone())) as Box<dyn FactoryLifecycleHooks<u64, W::Job>>)
            .dead_mans_switch(DeadMansSwitchConfiguration::builder().detection_timeout(spec.hang_after).build())
            .build();
        let (factory_box, current) = (factory_box.clone(), current.clone());
        async move {
            let (factory, _) = Actor::spawn_linked(None, PoolFactory::<W>::default(), args, sup).await?;
            if let Ok(mut c) = current.lock() {
                *c = Some(shared);
            }
            factory_box.point_at(factory.clone());
            Ok(factory.get_cell())
        }
        .boxed()
    });
    let stop: super::supervisor::StopFn = Box::new(|cell, deadline| {
        async move {
            let factory: ActorRef<FactoryMessage<u64, W::Job>> = cell.clone().into();
            let _ = factory.drain_requests();
            let wait = deadline.saturating_duration_since(Instant::now());
            if cell.wait(Some(wait)).await.is_err() {
                tracing::warn!("jobs still running after the drain timeout; their leases will expire");
                let _ = cell.kill_and_wait(Some(Duration::from_secs(5))).await;
            }
        }
        .boxed()
    });
    (ChildSpec::with_start_and_stop(name, start, stop), handle)
}
