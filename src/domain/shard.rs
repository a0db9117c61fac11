//! Queue sharing between data centres, the seed's two-SDC setup: MariaDB master-master with
//! `auto_increment_increment = N` and a different `auto_increment_offset` per side, so every
//! row's id says which side wrote it. Each side claims only the `cdr_queue` and `tasks` rows
//! of its own residue (`id % N`): a row replicated from the other side is the other side's.
//! Claims are leases written to one's own server; two sides claiming the same row on their
//! own servers at once would both win, which is why the rows are split and not shared.
//!
//! When a side falls silent (its heartbeat in `cdrmunch_nodes` stops moving) for longer than
//! the takeover delay, the survivors also claim its residue; when it beats again they stop,
//! and it waits a settle time before claiming, so that they have seen it first. Silence is
//! judged by this process's own clock (a counter that stopped changing), never by comparing
//! two hosts' clocks.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

/// `distiller.shard`: which ids this process claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSetting {
    /// From the database: MySQL's `@@auto_increment_offset / @@auto_increment_increment`;
    /// no sharding on SQLite or when the increment is 1.
    Auto,
    /// Every row, whatever the server's auto-increment settings.
    None,
    /// `OFFSET/INCREMENT`, as the server's auto-increment settings would say.
    Fixed(Shard),
}

/// This process's share: the ids with `id % increment == residue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub residue: u32,
    pub increment: u32,
}

impl Shard {
    /// The shard of a server with these auto-increment settings: ids `offset`,
    /// `offset + increment`, … (MySQL ignores an offset above the increment and uses 1).
    pub fn of_auto_increment(offset: u64, increment: u64) -> Option<Shard> {
        let increment = u32::try_from(increment).ok().filter(|i| *i > 1)?;
        let offset = u32::try_from(offset).ok().filter(|o| *o >= 1 && *o <= increment).unwrap_or(1);
        Some(Shard { residue: offset % increment, increment })
    }
}

impl fmt::Display for Shard {
    /// As configured: `OFFSET/INCREMENT` (residue 0 is offset INCREMENT).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = if self.residue == 0 { self.increment } else { self.residue };
        write!(f, "{offset}/{}", self.increment)
    }
}

impl FromStr for ShardSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const EXPECTED: &str = "auto, none, or OFFSET/INCREMENT with 1 <= OFFSET <= INCREMENT <= 64 (e.g. 1/2)";
        match s.trim() {
            "auto" => Ok(ShardSetting::Auto),
            "none" => Ok(ShardSetting::None),
            other => {
                let (o, i) = other.split_once('/').ok_or(EXPECTED)?;
                let (o, i): (u32, u32) =
                    (o.trim().parse().map_err(|_| EXPECTED)?, i.trim().parse().map_err(|_| EXPECTED)?);
                if !(1..=64).contains(&i) || o < 1 || o > i {
                    return Err(EXPECTED.into());
                }
                Ok(match i {
                    1 => ShardSetting::None,
                    _ => ShardSetting::Fixed(Shard { residue: o % i, increment: i }),
                })
            }
        }
    }
}

/// One row of `cdrmunch_nodes` as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    pub instance: String,
    pub residue: u32,
    pub increment: u32,
    /// Bumped by every heartbeat; silence is this number not changing.
    pub beats: u64,
    pub distiller: bool,
    pub tasks: bool,
}

/// The residues this process claims, per queue; `None` claims every row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owned {
    pub cdrs: Option<BTreeSet<u32>>,
    pub tasks: Option<BTreeSet<u32>>,
}

/// Watches the other nodes' heartbeats and decides which residues this process claims.
#[derive(Debug)]
pub struct PeerWatch {
    me: String,
    shard: Shard,
    /// Silence after which a residue is taken over; `None` never takes over.
    takeover_ms: Option<u64>,
    /// Own residue unclaimed until this long after start.
    settle_ms: u64,
    started_ms: u64,
    /// Per instance: its last beat count and when (our clock) it last changed.
    seen: HashMap<String, (u64, u64)>,
}

impl PeerWatch {
    pub fn new(me: &str, shard: Shard, takeover_ms: Option<u64>, settle_ms: u64, now_ms: u64) -> PeerWatch {
        PeerWatch { me: me.into(), shard, takeover_ms, settle_ms, started_ms: now_ms, seen: HashMap::new() }
    }

    /// Takes in the nodes as read at `now_ms` (this process's monotonic clock) and says
    /// what this process claims now. A node seen for the first time counts as just heard.
    pub fn observe(&mut self, nodes: &[NodeBeat], now_ms: u64) -> Owned {
        for n in nodes.iter().filter(|n| n.instance != self.me) {
            let entry = self.seen.entry(n.instance.clone()).or_insert((n.beats, now_ms));
            if entry.0 != n.beats {
                *entry = (n.beats, now_ms);
            }
        }
        let settled = now_ms.saturating_sub(self.started_ms) >= self.settle_ms;
        let owned = |role: fn(&NodeBeat) -> bool| {
            let mut residues = BTreeSet::new();
            for r in 0..self.shard.increment {
                let mine = r == self.shard.residue;
                let live_owner = nodes.iter().any(|n| {
                    n.instance != self.me
                        && n.increment == self.shard.increment
                        && n.residue == r
                        && role(n)
                        && self.takeover_ms.is_none_or(|t| {
                            self.seen.get(&n.instance).is_some_and(|(_, at)| now_ms.saturating_sub(*at) < t)
                        })
                });
                let orphan = !mine && self.takeover_ms.is_some() && !live_owner;
                if (mine || orphan) && settled {
                    residues.insert(r);
                }
            }
            residues
        };
        Owned { cdrs: Some(owned(|n| n.distiller)), tasks: Some(owned(|n| n.tasks)) }
    }
}

/// The SQL condition for a set of residues: `None` (no condition) when every residue is
/// owned, `Some("")`-free: an empty set is for the caller to skip the claim.
pub fn residue_condition(increment: u32, owned: &BTreeSet<u32>) -> Option<String> {
    if increment <= 1 || owned.len() as u32 >= increment {
        return None;
    }
    let list: Vec<String> = owned.iter().map(u32::to_string).collect();
    Some(format!(" AND id % {increment} IN ({})", list.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, residue: u32, beats: u64) -> NodeBeat {
        NodeBeat { instance: name.into(), residue, increment: 2, beats, distiller: true, tasks: true }
    }

    fn set(v: &[u32]) -> Option<BTreeSet<u32>> {
        Some(v.iter().copied().collect())
    }

    #[test]
    fn settings_parse_as_the_server_would_say_them() {
        assert_eq!("auto".parse(), Ok(ShardSetting::Auto));
        assert_eq!("none".parse(), Ok(ShardSetting::None));
        assert_eq!("1/2".parse(), Ok(ShardSetting::Fixed(Shard { residue: 1, increment: 2 })));
        assert_eq!("2/2".parse(), Ok(ShardSetting::Fixed(Shard { residue: 0, increment: 2 })));
        assert_eq!("1/1".parse(), Ok(ShardSetting::None));
        for bad in ["0/2", "3/2", "1/0", "1/65", "x", "1/", "/2", ""] {
            assert!(bad.parse::<ShardSetting>().is_err(), "{bad}");
        }
        assert_eq!(Shard { residue: 0, increment: 2 }.to_string(), "2/2");
        assert_eq!(Shard::of_auto_increment(2, 2), Some(Shard { residue: 0, increment: 2 }));
        assert_eq!(Shard::of_auto_increment(1, 2), Some(Shard { residue: 1, increment: 2 }));
        assert_eq!(
            Shard::of_auto_increment(5, 2),
            Some(Shard { residue: 1, increment: 2 }),
            "MySQL: offset > increment is 1"
        );
        assert_eq!(Shard::of_auto_increment(1, 1), None);
    }

    #[test]
    fn nothing_before_settling_then_own_residue_while_the_peer_beats() {
        let shard = Shard { residue: 1, increment: 2 };
        let mut w = PeerWatch::new("a", shard, Some(10_000), 3_000, 0);
        let both = [node("a", 1, 1), node("b", 0, 1)];
        assert_eq!(w.observe(&both, 1_000), Owned { cdrs: set(&[]), tasks: set(&[]) });
        let both = [node("a", 1, 2), node("b", 0, 2)];
        assert_eq!(w.observe(&both, 3_000).cdrs, set(&[1]));
        // b keeps beating: never taken over
        for t in 1..20u64 {
            let beats = [node("a", 1, 2 + t), node("b", 0, 2 + t)];
            assert_eq!(w.observe(&beats, 3_000 + t * 2_000).cdrs, set(&[1]));
        }
    }

    #[test]
    fn a_silent_peer_is_taken_over_after_the_delay_and_given_back_when_it_beats() {
        let shard = Shard { residue: 1, increment: 2 };
        let mut w = PeerWatch::new("a", shard, Some(10_000), 0, 0);
        assert_eq!(w.observe(&[node("b", 0, 7)], 0).cdrs, set(&[1]));
        assert_eq!(w.observe(&[node("b", 0, 7)], 9_999).cdrs, set(&[1]), "silent, not yet for the delay");
        assert_eq!(w.observe(&[node("b", 0, 7)], 10_000).cdrs, set(&[0, 1]), "taken over");
        assert_eq!(w.observe(&[node("b", 0, 8)], 12_000).cdrs, set(&[1]), "b is back");
    }

    #[test]
    fn a_residue_nobody_announced_is_claimed_and_takeover_can_be_off() {
        let shard = Shard { residue: 0, increment: 3 };
        let mut w = PeerWatch::new("a", shard, Some(5_000), 0, 0);
        assert_eq!(w.observe(&[node("c", 1, 1)].map(|n| NodeBeat { increment: 3, ..n }), 0).cdrs, set(&[0, 2]));
        let mut off = PeerWatch::new("a", shard, None, 0, 0);
        assert_eq!(off.observe(&[], 1_000_000).cdrs, set(&[0]));
    }

    #[test]
    fn roles_are_covered_apart() {
        let shard = Shard { residue: 1, increment: 2 };
        let mut w = PeerWatch::new("a", shard, Some(1_000), 0, 0);
        let b = NodeBeat { tasks: false, ..node("b", 0, 1) };
        let got = w.observe(&[b], 0);
        assert_eq!((got.cdrs, got.tasks), (set(&[1]), set(&[0, 1])), "b runs no tasks: its residue's tasks are ours");
    }

    #[test]
    fn conditions() {
        let s = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(residue_condition(2, &s(&[1])).as_deref(), Some(" AND id % 2 IN (1)"));
        assert_eq!(residue_condition(2, &s(&[0, 1])), None);
        assert_eq!(residue_condition(1, &s(&[0])), None);
    }
}
