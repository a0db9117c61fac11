//! QueuePoller: claims due `cdr_queue` rows under a lease, never more than the distillery
//! pool has room for (mailboxes are unbounded, so backpressure lives here, and the pool's
//! factory is the one place that knows its room), and hands them to the pool.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::distillery::Distillery;
use super::pool::Pool;
use crate::store::CdrQueue;

pub enum QueuePollerMsg {
    /// New rows were committed (intake): claim now rather than at the next tick.
    Wake,
    /// The poll timer; re-armed at the end of each tick.
    Tick,
    /// A CDR left the pool: there may be room for more.
    Finished,
}

pub struct QueuePollerArgs {
    pub queue: Arc<dyn CdrQueue>,
    pub pool: Pool<Distillery>,
    pub poll_interval: Duration,
    pub max_batch: usize,
    pub lease: Duration,
}

pub struct QueuePollerState {
    args: QueuePollerArgs,
    /// The last claim was full, so more rows are probably due.
    more_due: bool,
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
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(QueuePollerMsg::Tick)?;
        Ok(QueuePollerState { args, more_due: true })
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
                state.claim(true).await;
            }
            QueuePollerMsg::Tick => {
                state.more_due = true;
                state.claim(true).await;
                myself.send_after(state.args.poll_interval, || QueuePollerMsg::Tick);
            }
            QueuePollerMsg::Finished => state.claim(false).await,
        }
        Ok(())
    }
}

impl QueuePollerState {
    /// Claims when it is worth a round trip: always on a wake or tick, otherwise only when
    /// more rows are known to be due and half the pool's room is free.
    async fn claim(&mut self, forced: bool) {
        let a = &self.args;
        let room = a.pool.room().await;
        if room == 0 || !(forced || (self.more_due && room * 2 >= a.pool.capacity())) {
            return;
        }
        let limit = room.min(a.max_batch) as u32;
        let now = chrono::Utc::now();
        let lease = chrono::Duration::from_std(a.lease).unwrap_or(chrono::Duration::seconds(300));
        let rows = match a.queue.claim_cdrs(now, now + lease, limit).await {
            Ok(rows) => rows,
            Err(e) => {
                // Nothing claimed, nothing lost: the next tick tries again.
                self.more_due = false;
                tracing::warn!(error = %e, "cdr_queue claim failed");
                return;
            }
        };
        self.more_due = rows.len() as u32 == limit;
        let mut refused = Vec::new();
        for row in rows {
            if let Err(row) = a.pool.dispatch(row) {
                refused.push(row.id);
            }
        }
        // the pool is restarting: give the claims back now rather than at lease end
        if !refused.is_empty() {
            if let Err(e) = a.queue.release_claims(&refused).await {
                tracing::warn!(error = %e, "could not release {} claims; their leases will expire", refused.len());
            }
        }
    }
}
