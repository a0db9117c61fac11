//! QueuePoller: claims due `cdr_queue` rows under a lease, never more than the distilleries
//! have room for (mailboxes are unbounded, so backpressure lives here), and hands them out.
//! It also keeps the bookkeeping a dying distillery cannot: which CDR it was on, how many
//! times that CDR has killed a distillery, and when a CDR is a poison pill.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::distillery::{DistilleryContext, DistilleryMsg};
use super::{join, now, Role};
use crate::domain::outcome::Outcome;
use crate::store::QueuedCdr;

pub enum QueuePollerMsg {
    /// New rows were committed (intake) or may be due: claim now rather than at the next tick.
    Wake,
    /// The poll timer; re-armed at the end of each tick.
    Tick,
    JobDone {
        distillery: ActorId,
        cdr_id: u64,
        outcome: Outcome,
    },
    /// A (re)started distillery joins the pool.
    DistilleryUp(ActorRef<DistilleryMsg>),
    /// A distillery died; its current CDR had an internal failure, its queued ones go back.
    DistilleryDown {
        id: ActorId,
        reason: String,
    },
    /// Stop claiming, give back what has not started, reply when in-flight work is done.
    Drain(RpcReplyPort<()>),
}

struct Slot {
    actor: ActorRef<DistilleryMsg>,
    /// Front = the CDR being distilled now; the rest wait in its mailbox.
    jobs: VecDeque<QueuedCdr>,
    front_since: Instant,
    killed_for_hang: bool,
}

pub struct QueuePollerArgs {
    pub ctx: Arc<DistilleryContext>,
    pub distilleries: Vec<ActorRef<DistilleryMsg>>,
}

pub struct QueuePollerState {
    ctx: Arc<DistilleryContext>,
    slots: Vec<Slot>,
    ready: VecDeque<QueuedCdr>,
    /// Internal failures per cdr_queue.id (in memory: a restart forgives, the lease retries).
    crashes: HashMap<u64, u32>,
    /// The last claim was full, so more rows are probably due.
    more_due: bool,
    draining: Option<RpcReplyPort<()>>,
}

pub struct QueuePoller;

impl Actor for QueuePoller {
    type Msg = QueuePollerMsg;
    type State = QueuePollerState;
    type Arguments = QueuePollerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<QueuePollerMsg>,
        args: QueuePollerArgs,
    ) -> Result<QueuePollerState, ActorProcessingErr> {
        join(&args.ctx.instance, Role::QueuePoller, myself.get_cell());
        let slots = args.distilleries.into_iter().map(Slot::new).collect();
        myself.send_message(QueuePollerMsg::Tick)?;
        Ok(QueuePollerState {
            ctx: args.ctx,
            slots,
            ready: VecDeque::new(),
            crashes: HashMap::new(),
            more_due: true,
            draining: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<QueuePollerMsg>,
        msg: QueuePollerMsg,
        state: &mut QueuePollerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            QueuePollerMsg::Wake => {
                state.more_due = true;
                state.claim_and_dispatch(&myself, true).await;
            }
            QueuePollerMsg::Tick => {
                state.kill_hung();
                state.more_due = true;
                state.claim_and_dispatch(&myself, true).await;
                let interval = state.ctx.config.poll_interval;
                myself.send_after(interval, || QueuePollerMsg::Tick);
            }
            QueuePollerMsg::JobDone { distillery, cdr_id, outcome } => {
                if let Some(slot) = state.slots.iter_mut().find(|s| s.actor.get_id() == distillery) {
                    slot.jobs.retain(|j| j.id != cdr_id);
                    slot.front_since = Instant::now();
                }
                if !matches!(outcome, Outcome::InternalFailure(_)) {
                    state.crashes.remove(&cdr_id);
                }
                state.claim_and_dispatch(&myself, false).await;
            }
            QueuePollerMsg::DistilleryUp(actor) => {
                state.slots.push(Slot::new(actor));
                state.claim_and_dispatch(&myself, false).await;
            }
            QueuePollerMsg::DistilleryDown { id, reason } => {
                if let Some(pos) = state.slots.iter().position(|s| s.actor.get_id() == id) {
                    let slot = state.slots.remove(pos);
                    let reason = if slot.killed_for_hang {
                        format!(
                            "distillery hung for more than {}s and was killed",
                            state.ctx.config.job_timeout.as_secs()
                        )
                    } else {
                        format!("distillery failed: {reason}")
                    };
                    let mut jobs = slot.jobs;
                    if let Some(current) = jobs.pop_front() {
                        state.internal_failure(current, &reason).await;
                    }
                    // Not started yet: still leased to us, hand them to the others.
                    for job in jobs.into_iter().rev() {
                        state.ready.push_front(job);
                    }
                }
                state.claim_and_dispatch(&myself, false).await;
            }
            QueuePollerMsg::Drain(reply) => {
                let unstarted: Vec<u64> = state.ready.drain(..).map(|j| j.id).collect();
                if let Err(e) = state.ctx.repo.release_claims(&unstarted).await {
                    tracing::warn!(error = %e, "could not release {} claims; their leases will expire", unstarted.len());
                }
                state.draining = Some(reply);
            }
        }
        state.reply_if_drained();
        let inflight = state.ready.len() + state.slots.iter().map(|s| s.jobs.len()).sum::<usize>();
        metrics::gauge!(crate::telemetry::INFLIGHT).set(inflight as f64);
        Ok(())
    }
}

impl Slot {
    fn new(actor: ActorRef<DistilleryMsg>) -> Self {
        Slot { actor, jobs: VecDeque::new(), front_since: Instant::now(), killed_for_hang: false }
    }
}

impl QueuePollerState {
    fn free_capacity(&self) -> usize {
        let prefetch = self.ctx.config.prefetch;
        let room: usize = self.slots.iter().map(|s| prefetch.saturating_sub(s.jobs.len())).sum();
        room.saturating_sub(self.ready.len())
    }

    /// Claims when it is worth a round trip: always on a wake or tick, otherwise only when
    /// more rows are known to be due and half the pool's room is free.
    async fn claim_and_dispatch(&mut self, myself: &ActorRef<QueuePollerMsg>, forced: bool) {
        let total = self.slots.len() * self.ctx.config.prefetch;
        let free = self.free_capacity();
        let worth_it = forced || (self.more_due && free * 2 >= total.max(1));
        if self.draining.is_none() && free > 0 && worth_it {
            let limit = free.min(self.ctx.config.max_batch) as u32;
            let t = now();
            let lease = chrono::Duration::from_std(self.ctx.config.lease).unwrap_or(chrono::Duration::seconds(300));
            let started = Instant::now();
            match self.ctx.repo.claim_cdrs(t, t + lease, limit).await {
                Ok(rows) => {
                    tracing::trace!(
                        limit,
                        claimed = rows.len(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "claim"
                    );
                    self.more_due = rows.len() as u32 == limit;
                    self.ready.extend(rows);
                }
                Err(e) => {
                    // Nothing claimed, nothing lost: the next tick tries again.
                    self.more_due = false;
                    tracing::warn!(error = %e, "cdr_queue claim failed");
                }
            }
        }
        self.dispatch(myself);
    }

    /// Gives each ready CDR to the distillery with the shortest queue.
    fn dispatch(&mut self, myself: &ActorRef<QueuePollerMsg>) {
        let prefetch = self.ctx.config.prefetch;
        while let Some(job) = self.ready.front() {
            let Some(slot) = self
                .slots
                .iter_mut()
                .filter(|s| s.jobs.len() < prefetch && !s.killed_for_hang)
                .min_by_key(|s| s.jobs.len())
            else {
                break;
            };
            let msg = DistilleryMsg::Distill { job: job.clone(), reply_to: myself.clone() };
            if slot.actor.send_message(msg).is_err() {
                break; // it is dying; DistilleryDown will follow
            }
            if slot.jobs.is_empty() {
                slot.front_since = Instant::now();
            }
            slot.jobs.push_back(self.ready.pop_front().expect("front exists"));
        }
    }

    fn kill_hung(&mut self) {
        let timeout = self.ctx.config.job_timeout;
        for slot in &mut self.slots {
            if !slot.killed_for_hang && !slot.jobs.is_empty() && slot.front_since.elapsed() > timeout {
                tracing::error!(cdr_id = slot.jobs[0].id, "distillery hung; killing it");
                slot.killed_for_hang = true;
                slot.actor.kill();
            }
        }
    }

    /// The CDR a distillery died on: retried soon, or marked critical once it has taken
    /// down `poison_threshold` distilleries, so one poison pill cannot stall the queue.
    async fn internal_failure(&mut self, job: QueuedCdr, reason: &str) {
        let count = self.crashes.entry(job.id).or_insert(0);
        *count += 1;
        let count = *count;
        let t = now();
        let threshold = self.ctx.config.poison_threshold;
        let outcome = Outcome::InternalFailure(format!("{reason} (failure {count} of {threshold})"));
        crate::telemetry::outcome(outcome.label());
        tracing::error!(cdr_id = job.id, path = %job.path, "{outcome}");
        let result = if count >= threshold {
            self.crashes.remove(&job.id);
            let why = format!("poison pill: brought down a distillery {count} times; last: {reason}");
            self.ctx.repo.mark_error(job.id, &why, true, t).await
        } else {
            self.ctx.repo.schedule_retry(job.id, t + chrono::Duration::seconds(1), &outcome.to_string(), t).await
        };
        if let Err(e) = result {
            tracing::error!(cdr_id = job.id, error = %e, "could not record internal failure; the lease will expire");
        }
    }

    fn reply_if_drained(&mut self) {
        if self.draining.is_some() && self.slots.iter().all(|s| s.jobs.is_empty()) {
            let _ = self.draining.take().expect("checked").send(());
        }
    }
}
