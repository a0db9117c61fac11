//! One record per call. FreeSWITCH writes a CDR per leg; a call is the legs linked by the
//! uuids they name (`originator`, `originating_leg_uuid`, `bridge_uuid`, `other_leg_uuid`,
//! `signal_bond`, `last_bridge_to`, `call_uuid`, the loopback pair's
//! `other_loopback_leg_uuid` / `other_loopback_from_uuid`, the peer caller profiles). Legs
//! arrive in any order, so linking is incremental: a union-find over the uuids of each commit
//! batch and the calls they already belong to ([`plan_links`]), and a call's summary is
//! recomputed from its legs whenever one joins ([`summarize`]).

use std::collections::{BTreeMap, BTreeSet};

use super::normalize::Leg;

pub type Uuid = [u8; 16];

/// What one leg contributes to its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegFacts {
    pub uuid: Uuid,
    /// The other legs this one names.
    pub peers: Vec<Uuid>,
    pub leg: Leg,
    pub loopback: bool,
    pub start: i64,
    pub answer: i64,
    pub end: i64,
    pub billsec: i64,
    /// The number presented (after the caller-ID flip rule).
    pub caller: String,
    pub callee: String,
    pub hangup_cause: String,
}

/// A leg's part in its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The call's first A-leg: its uuid is the call id.
    Caller,
    /// A leg FreeSWITCH originated for the call (a B-leg).
    Callee,
    /// A further A-leg of the call (a transfer, a consultation).
    Transfer,
    /// A half of a `loopback/` pair: its times repeat the real legs'.
    Loopback,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Callee => "callee",
            Role::Transfer => "transfer",
            Role::Loopback => "loopback",
        }
    }
}

/// A call as billing and the call log see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    /// The first A-leg's uuid (the earliest that is not a loopback half; any leg while no
    /// A-leg has arrived yet).
    pub call_id: Uuid,
    pub caller: String,
    pub callee: String,
    pub start: i64,
    /// The first answer of a real (not loopback) leg; 0 if none answered.
    pub answer: i64,
    pub end: i64,
    /// The longest billed time of a real leg: a loopback half's billsec may stop at bow-out.
    pub talk_seconds: i64,
    pub answered: bool,
    /// The cause of the real leg that ended last.
    pub hangup_cause: String,
    pub legs: Vec<(Uuid, Leg, Role)>,
}

/// The summary of a call from its legs (those that have arrived); None without legs.
pub fn summarize(legs: &[LegFacts]) -> Option<CallSummary> {
    let real: Vec<&LegFacts> = legs.iter().filter(|l| !l.loopback).collect();
    let by_start = |l: &LegFacts| (if l.start > 0 { l.start } else { i64::MAX }, l.uuid);
    let first = real
        .iter()
        .copied()
        .filter(|l| l.leg == Leg::A)
        .min_by_key(|l| by_start(l))
        .or_else(|| real.iter().copied().min_by_key(|l| by_start(l)))
        .or_else(|| legs.iter().min_by_key(|l| by_start(l)))?;
    let talked = if real.is_empty() { legs.iter().collect() } else { real.clone() };
    let last = talked.iter().max_by_key(|l| (l.end, l.leg == Leg::A, std::cmp::Reverse(l.uuid)))?;
    let talk_seconds = talked.iter().map(|l| l.billsec.max(0)).max().unwrap_or(0);
    let answer = talked.iter().map(|l| l.answer).filter(|a| *a > 0).min().unwrap_or(0);
    let mut members: Vec<&LegFacts> = legs.iter().collect();
    members.sort_by_key(|l| (l.uuid != first.uuid, by_start(l)));
    let role = |l: &LegFacts| match (l.loopback, l.leg) {
        (true, _) => Role::Loopback,
        _ if l.uuid == first.uuid => Role::Caller,
        (false, Leg::A) => Role::Transfer,
        (false, Leg::B) => Role::Callee,
    };
    Some(CallSummary {
        call_id: first.uuid,
        caller: first.caller.clone(),
        callee: first.callee.clone(),
        start: legs.iter().map(|l| l.start).filter(|s| *s > 0).min().unwrap_or(0),
        answer,
        end: legs.iter().map(|l| l.end).max().unwrap_or(0),
        talk_seconds,
        answered: answer > 0 || talk_seconds > 0,
        hangup_cause: last.hangup_cause.clone(),
        legs: members.into_iter().map(|l| (l.uuid, l.leg, role(l))).collect(),
    })
}

/// How a commit batch's legs join the calls already known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkPlan {
    pub calls: Vec<LinkedCall>,
}

/// One call a batch touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedCall {
    /// The call's key: the one it already had (the smallest, when calls merge), else the
    /// smallest uuid of its legs.
    pub key: Uuid,
    /// Keys of calls that turned out to be this one: their legs move here.
    pub merged: Vec<Uuid>,
    /// Every uuid of the batch's legs and their peers that belongs to this call.
    pub members: Vec<Uuid>,
}

/// Groups the batch's legs with their peers and with the calls (`existing`: uuid → call key)
/// any of those uuids already belongs to.
pub fn plan_links(batch: &[LegFacts], existing: &BTreeMap<Uuid, Uuid>) -> LinkPlan {
    let mut parent: BTreeMap<Uuid, Uuid> = BTreeMap::new();
    fn find(parent: &mut BTreeMap<Uuid, Uuid>, x: Uuid) -> Uuid {
        let p = *parent.entry(x).or_insert(x);
        if p == x {
            return x;
        }
        let root = find(parent, p);
        parent.insert(x, root);
        root
    }
    let union = |parent: &mut BTreeMap<Uuid, Uuid>, a: Uuid, b: Uuid| {
        let (ra, rb) = (find(parent, a), find(parent, b));
        if ra != rb {
            parent.insert(ra.max(rb), ra.min(rb));
        }
    };
    // a call key is a uuid of one of its legs: linking a uuid to its call's key joins them
    for leg in batch {
        find(&mut parent, leg.uuid);
        for peer in &leg.peers {
            union(&mut parent, leg.uuid, *peer);
        }
    }
    let uuids: Vec<Uuid> = parent.keys().copied().collect();
    for u in &uuids {
        if let Some(key) = existing.get(u) {
            union(&mut parent, *u, *key);
        }
    }
    let mut groups: BTreeMap<Uuid, (BTreeSet<Uuid>, BTreeSet<Uuid>)> = BTreeMap::new();
    for u in uuids {
        let root = find(&mut parent, u);
        let (members, keys) = groups.entry(root).or_default();
        members.insert(u);
        if let Some(key) = existing.get(&u) {
            keys.insert(*key);
        }
    }
    let calls = groups
        .into_values()
        .map(|(members, keys)| {
            let key = keys.first().copied().unwrap_or_else(|| *members.first().expect("a group has a member"));
            LinkedCall {
                key,
                merged: keys.into_iter().filter(|k| *k != key).collect(),
                members: members.into_iter().collect(),
            }
        })
        .collect();
    LinkPlan { calls }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(n: u8, leg: Leg, loopback: bool, peers: &[u8], start: i64, billsec: i64) -> LegFacts {
        LegFacts {
            uuid: [n; 16],
            peers: peers.iter().map(|p| [*p; 16]).collect(),
            leg,
            loopback,
            start,
            answer: if billsec > 0 { start + 2 } else { 0 },
            end: start + 2 + billsec,
            billsec,
            caller: format!("caller{n}"),
            callee: format!("callee{n}"),
            hangup_cause: format!("CAUSE{n}"),
        }
    }

    /// A (1) → loopback-a (2) ↔ loopback-b (3) → B (4): the four CDRs of a call through loopback.
    fn through_loopback() -> Vec<LegFacts> {
        vec![
            leg(1, Leg::A, false, &[], 100, 30),
            leg(2, Leg::B, true, &[1, 3], 101, 31),
            leg(3, Leg::A, true, &[2, 1], 101, 3),
            leg(4, Leg::B, false, &[3], 102, 28),
        ]
    }

    /// Feeds legs one batch at a time, keeping what a store would: uuid → call key.
    fn link_in_order(legs: &[LegFacts]) -> BTreeMap<Uuid, Uuid> {
        let mut known: BTreeMap<Uuid, Uuid> = BTreeMap::new();
        for l in legs {
            let plan = plan_links(std::slice::from_ref(l), &known);
            for call in plan.calls {
                for (_, key) in known.iter_mut().filter(|(_, k)| call.merged.contains(k)) {
                    *key = call.key;
                }
                for m in call.members {
                    known.insert(m, call.key);
                }
            }
        }
        known
    }

    #[test]
    fn four_legs_in_every_arrival_order_make_one_call() {
        let legs = through_loopback();
        let mut orders = 0;
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    for d in 0..4 {
                        let idx = [a, b, c, d];
                        if (0..4).any(|i| !idx.contains(&i)) {
                            continue;
                        }
                        orders += 1;
                        let order: Vec<LegFacts> = idx.iter().map(|&i| legs[i].clone()).collect();
                        let known = link_in_order(&order);
                        let keys: BTreeSet<Uuid> = legs.iter().map(|l| known[&l.uuid]).collect();
                        assert_eq!(keys.len(), 1, "{idx:?}: {known:?}");
                    }
                }
            }
        }
        assert_eq!(orders, 24);
    }

    #[test]
    fn a_call_is_summed_up_from_its_real_legs() {
        let s = summarize(&through_loopback()).unwrap();
        assert_eq!(s.call_id, [1; 16]);
        assert_eq!((s.caller.as_str(), s.callee.as_str()), ("caller1", "callee1"));
        assert_eq!((s.start, s.answer, s.end, s.talk_seconds, s.answered), (100, 102, 134, 30, true));
        assert_eq!(s.hangup_cause, "CAUSE1", "the A-leg ended last (132 vs the B-leg's 132): A wins the tie");
        let roles: Vec<(u8, &str)> = s.legs.iter().map(|(u, _, r)| (u[0], r.as_str())).collect();
        assert_eq!(roles, [(1, "caller"), (2, "loopback"), (3, "loopback"), (4, "callee")]);
        // before the A-leg arrives, the B-leg stands for the call
        let only_b = summarize(&through_loopback()[3..]).unwrap();
        assert_eq!((only_b.call_id, only_b.legs[0].2), ([4; 16], Role::Caller));
    }

    #[test]
    fn two_partial_calls_that_turn_out_to_be_one_are_merged() {
        // A (1) and B (4) arrive first: two calls. Then loopback-b (3), naming both sides.
        let mut known = link_in_order(&[leg(1, Leg::A, false, &[], 100, 30), leg(4, Leg::B, false, &[9], 102, 28)]);
        assert_ne!(known[&[1; 16]], known[&[4; 16]]);
        let joining = leg(3, Leg::A, true, &[1, 4], 101, 3);
        let plan = plan_links(std::slice::from_ref(&joining), &known);
        assert_eq!(plan.calls.len(), 1);
        let call = &plan.calls[0];
        assert_eq!(call.key, [1; 16], "the smallest existing key survives");
        assert_eq!(call.merged, vec![[4; 16]]);
        known = link_in_order(&[leg(1, Leg::A, false, &[], 100, 30), leg(4, Leg::B, false, &[9], 102, 28), joining]);
        assert_eq!(known[&[9; 16]], [1; 16], "a peer named before the merge moves with its call");
    }
}
