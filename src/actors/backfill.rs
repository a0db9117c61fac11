//! Backfill: moves spooled `cdr_queue` rows (see [`crate::spool`]) into the database once it
//! answers again, oldest batch first, and wakes the queue poller so they are distilled at
//! once. Woken by intake when it spools; while rows wait it retries on the one backoff.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::mailbox::Mailbox;
use super::poller::PollerMsg;
use crate::domain::outcome::Backoff;
use crate::events;
use crate::spool::Spool;
use crate::store::Repository;

/// A reason to look at the spool.
pub enum Backfill {
    /// Intake spooled rows (or the process started with some).
    Wake,
    /// The backoff after a failed attempt is over.
    Retry,
}

pub struct BackfillArgs {
    pub spool: Arc<Spool>,
    pub repo: Arc<dyn Repository>,
    /// This process's QueuePoller, when it runs the distiller role.
    pub wake: Option<Mailbox<PollerMsg>>,
}

pub struct BackfillState {
    args: BackfillArgs,
    /// Failed attempts in a row, for the backoff.
    failures: u32,
    /// A retry is already scheduled: wake-ups in the meantime change nothing.
    retry_scheduled: bool,
}

/// How soon a backfill is tried again while the database is still away.
const RETRY: Backoff = Backoff::exponential(Duration::from_millis(500), Duration::from_secs(10));
/// Rows inserted in one transaction (several spooled batches at once).
const BATCH_ROWS: usize = 5_000;
/// One insert of a spooled batch may take this long before the database counts as away.
const INSERT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct BackfillActor;

impl Actor for BackfillActor {
    type Msg = Backfill;
    type State = BackfillState;
    type Arguments = BackfillArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Backfill>,
        args: BackfillArgs,
    ) -> Result<BackfillState, ActorProcessingErr> {
        // a restart with rows left over backfills them
        if args.spool.rows() > 0 {
            myself.send_message(Backfill::Wake)?;
        }
        Ok(BackfillState { args, failures: 0, retry_scheduled: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<Backfill>,
        msg: Backfill,
        state: &mut BackfillState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            // the database is known to be away: the scheduled retry will look
            Backfill::Wake if state.retry_scheduled => return Ok(()),
            Backfill::Wake => {}
            Backfill::Retry => state.retry_scheduled = false,
        }
        loop {
            let spool = state.args.spool.clone();
            let Some((files, rows)) = tokio::task::spawn_blocking(move || spool.oldest(BATCH_ROWS)).await?? else {
                state.failures = 0;
                return Ok(());
            };
            let inserted = tokio::time::timeout(INSERT_TIMEOUT, state.args.repo.enqueue_cdrs(&rows)).await;
            match inserted {
                Ok(Ok(new)) => {
                    let spool = state.args.spool.clone();
                    let n = rows.len();
                    tokio::task::spawn_blocking(move || spool.remove(&files, n)).await??;
                    events::Backfilled { rows: n, new }.emit();
                    if let Some(poller) = &state.args.wake {
                        let _ = poller.send(PollerMsg::Wake);
                    }
                    state.failures = 0;
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {INSERT_TIMEOUT:?}"),
                    };
                    let delay = RETRY.delay(state.failures);
                    state.failures = state.failures.saturating_add(1);
                    events::BackfillWaiting { rows: state.args.spool.rows(), why: &why, retry_in: delay }.emit();
                    state.retry_scheduled = true;
                    myself.send_after(delay, || Backfill::Retry);
                    return Ok(());
                }
            }
        }
    }
}
