//! `cdrmunch_nodes` and the shard filter the claims apply: which processes work on this
//! database, each one's shard of the ids, and its heartbeat (see `domain::shard`).

use std::collections::BTreeSet;
use std::sync::RwLock;

use sqlx::Row;

use super::columns::{count, sql_time};
use super::{Dialect, Store, StoreResult, Time};
use crate::domain::shard::{residue_condition, NodeBeat, Owned, Shard, ShardSetting};

/// The residues this handle's claims take, shared by its clones; set by the heartbeat.
#[derive(Debug, Default)]
pub struct ShardFilter {
    /// `None`: no sharding, every row is claimable.
    shard: Option<Shard>,
    owned: RwLock<Owned>,
}

/// What a claim adds to its `WHERE`.
pub(super) enum Claimable {
    Every,
    Nothing,
    Only(String),
}

impl ShardFilter {
    /// Sharded filters start owning nothing: the heartbeat says when to begin.
    pub fn new(shard: Option<Shard>) -> ShardFilter {
        let owned = match shard {
            Some(_) => Owned { cdrs: Some(BTreeSet::new()), tasks: Some(BTreeSet::new()) },
            None => Owned::default(),
        };
        ShardFilter { shard, owned: RwLock::new(owned) }
    }

    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    pub fn set(&self, owned: Owned) {
        *self.owned.write().unwrap_or_else(|e| e.into_inner()) = owned;
    }

    pub fn owned(&self) -> Owned {
        self.owned.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn claimable(&self, pick: fn(&Owned) -> &Option<BTreeSet<u32>>) -> Claimable {
        let (Some(shard), owned) = (self.shard, self.owned.read().unwrap_or_else(|e| e.into_inner())) else {
            return Claimable::Every;
        };
        match pick(&owned) {
            None => Claimable::Every,
            Some(set) if set.is_empty() => Claimable::Nothing,
            Some(set) => residue_condition(shard.increment, set).map_or(Claimable::Every, Claimable::Only),
        }
    }

    pub(super) fn cdrs(&self) -> Claimable {
        self.claimable(|o| &o.cdrs)
    }

    pub(super) fn tasks(&self) -> Claimable {
        self.claimable(|o| &o.tasks)
    }
}

/// A process as `cdrmunch status` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRow {
    pub instance: String,
    /// `OFFSET/INCREMENT`, or None when it claims every row.
    pub shard: Option<String>,
    pub roles: String,
    pub beats: u64,
    /// UTC, as the process's own clock wrote it.
    pub last_beat: String,
}

impl Store {
    /// The same database, its claims limited to `shard` (owning nothing until told).
    pub fn sharded(mut self, shard: Option<Shard>) -> Store {
        self.shard = std::sync::Arc::new(ShardFilter::new(shard));
        self
    }

    pub fn shard_filter(&self) -> &ShardFilter {
        &self.shard
    }

    /// What `distiller.shard` means on this database: `auto` reads the server's
    /// auto-increment settings (MySQL; SQLite has one writer and no shards).
    pub async fn resolve_shard(&self, setting: ShardSetting) -> StoreResult<Option<Shard>> {
        match (setting, self.dialect) {
            (ShardSetting::None, _) | (ShardSetting::Auto, Dialect::Sqlite) => Ok(None),
            (ShardSetting::Fixed(s), _) => Ok(Some(s)),
            (ShardSetting::Auto, Dialect::Mysql) => {
                let row = sqlx::query(
                    "SELECT CAST(@@auto_increment_offset AS SIGNED), CAST(@@auto_increment_increment AS SIGNED)",
                )
                .fetch_one(&self.pool)
                .await?;
                let (offset, increment): (i64, i64) = (row.get(0), row.get(1));
                Ok(Shard::of_auto_increment(offset.max(0) as u64, increment.max(0) as u64))
            }
        }
    }

    /// Writes this process's heartbeat: its row created or its counter bumped.
    pub async fn beat(&self, roles: &str, now: Time) -> StoreResult<()> {
        let shard = self.shard.shard.unwrap_or(Shard { residue: 0, increment: 1 });
        let c = self.claimant.clone();
        let (now, roles) = (sql_time(now), roles.to_string());
        self.write_one(|mut conn| {
            let (c, now, roles) = (c.clone(), now.clone(), roles.clone());
            async move {
                let updated = sqlx::query(
                    "UPDATE cdrmunch_nodes SET beats = beats + 1, boot = ?, shard_residue = ?, shard_increment = ?, \
                     roles = ?, last_beat = ? WHERE instance_id = ?",
                )
                .bind(c.boot.clone())
                .bind(shard.residue as i64)
                .bind(shard.increment as i64)
                .bind(roles.clone())
                .bind(now.clone())
                .bind(c.instance.clone())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if updated == 0 {
                    sqlx::query(
                        "INSERT INTO cdrmunch_nodes (instance_id, boot, shard_residue, shard_increment, roles, beats, \
                         last_beat) VALUES (?, ?, ?, ?, ?, 1, ?)",
                    )
                    .bind(c.instance.clone())
                    .bind(c.boot.clone())
                    .bind(shard.residue as i64)
                    .bind(shard.increment as i64)
                    .bind(roles)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(((), conn))
            }
        })
        .await
    }

    /// `cdrmunch status`: every process that claims work here, newest heartbeat first.
    pub async fn node_report(&self) -> StoreResult<Vec<NodeRow>> {
        let rows = sqlx::query(
            "SELECT instance_id, CAST(shard_residue AS SIGNED), CAST(shard_increment AS SIGNED), roles, \
             CAST(beats AS SIGNED), CAST(last_beat AS CHAR) FROM cdrmunch_nodes ORDER BY last_beat DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (residue, increment) = (count(r, 1), count(r, 2));
                NodeRow {
                    instance: r.get(0),
                    shard: (increment > 1).then(|| Shard { residue, increment }.to_string()),
                    roles: r.get(3),
                    beats: r.get::<i64, _>(4).max(0) as u64,
                    last_beat: r.get(5),
                }
            })
            .collect())
    }

    /// Every node's last heartbeat as this database has it (replicated rows included).
    pub async fn nodes(&self) -> StoreResult<Vec<NodeBeat>> {
        let rows = sqlx::query(
            "SELECT instance_id, CAST(shard_residue AS SIGNED), CAST(shard_increment AS SIGNED), \
             CAST(beats AS SIGNED), roles FROM cdrmunch_nodes",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let roles: String = r.get(4);
                let has = |role: &str| roles.split(',').any(|x| x == role);
                NodeBeat {
                    instance: r.get(0),
                    residue: count(r, 1),
                    increment: count(r, 2),
                    beats: r.get::<i64, _>(3).max(0) as u64,
                    distiller: has("distiller"),
                    tasks: has("tasks"),
                }
            })
            .collect())
    }
}
