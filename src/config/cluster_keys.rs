//! Keys for running several processes on one database or on two replicating ones (the
//! seed's two-SDC setup): part of the one registry (`keys::all`), kept apart so the service's
//! table stays readable.

use super::keys::{key, FromParsed, KeySpec, Kind as K, Parsed};
use crate::domain::shard::ShardSetting;

#[rustfmt::skip]
pub(crate) static CLUSTER_KEYS: &[KeySpec] = &[
    key("distiller.shard", K::Shard, "auto", "which cdr_queue and tasks ids this process claims: auto (MySQL's auto_increment_offset/auto_increment_increment, so each side of a master-master pair claims the rows its own server numbered; every row on SQLite or with increment 1), none (every row), or OFFSET/INCREMENT (e.g. 1/2)"),
    key("distiller.takeover_seconds", K::Number, "60", "with a shard: how long another shard's processes may be silent (their heartbeat in cdrmunch_nodes not moving) before this process also claims that shard's rows; 0 never takes over; keep it above the replication outages you ride out"),
];

impl FromParsed for ShardSetting {
    fn from_parsed(p: Parsed) -> Option<Self> {
        match p {
            Parsed::Text(t) => t.parse().ok(),
            _ => None,
        }
    }
}
