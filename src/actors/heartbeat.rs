//! Heartbeat: keeps this process's row in `cdrmunch_nodes` beating and, when the claims are
//! sharded (the two-SDC setup), tells the store which shards to claim from what the other
//! processes' rows say (`domain::shard::PeerWatch`). A failed beat changes nothing: a
//! process whose database does not answer claims nothing either way.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::domain::shard::{Owned, PeerWatch};
use crate::events;
use crate::store::Store;

/// Time for the next beat.
pub struct Beat;

pub struct HeartbeatArgs {
    pub store: Store,
    /// As the node row lists them: `intake,distiller,tasks`.
    pub roles: String,
    pub interval: Duration,
    /// None: not sharded, only the row is kept beating.
    pub watch: Option<PeerWatch>,
    /// The clock `watch` reads (fixed per process, so a restarted actor does not settle again).
    pub epoch: Instant,
}

pub struct Heartbeat;

impl Actor for Heartbeat {
    type Msg = Beat;
    type State = HeartbeatArgs;
    type Arguments = HeartbeatArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Beat>,
        args: HeartbeatArgs,
    ) -> Result<HeartbeatArgs, ActorProcessingErr> {
        myself.send_message(Beat)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Beat>,
        _: Beat,
        state: &mut HeartbeatArgs,
    ) -> Result<(), ActorProcessingErr> {
        let beat = state.store.beat(&state.roles, chrono::Utc::now()).await;
        if let Err(e) = &beat {
            tracing::warn!("heartbeat not written: {e}");
        }
        if let (Ok(()), Some(watch), Some(shard)) = (&beat, state.watch.as_mut(), state.store.shard_filter().shard()) {
            match state.store.nodes().await {
                Ok(nodes) => {
                    let now_ms = state.epoch.elapsed().as_millis() as u64;
                    let owned = watch.observe(&nodes, now_ms);
                    let before = state.store.shard_filter().owned();
                    announce(&before, &owned, shard);
                    state.store.shard_filter().set(owned);
                }
                Err(e) => tracing::warn!("cdrmunch_nodes not read: {e}"),
            }
        }
        myself.send_after(state.interval, || Beat);
        Ok(())
    }
}

fn announce(before: &Owned, now: &Owned, shard: crate::domain::shard::Shard) {
    for (queue, was, is) in [("cdr_queue", &before.cdrs, &now.cdrs), ("tasks", &before.tasks, &now.tasks)] {
        if let (Some(residues), true) = (is, was != is) {
            events::ShardClaims { shard, queue, residues }.emit();
        }
    }
}
