//! `calls` and `call_legs`: one record per call, linked inside the transaction that commits
//! its legs (the distilleries' batch, or a replay), whatever order the legs arrive in.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, QueryBuilder, Row};

use super::columns::{cut, push_ids, push_uuids, sql_time, uuid};
use super::{Store, StoreResult, Time};
use crate::domain::calls::{plan_links, summarize, CallSummary, LegFacts};
use crate::domain::normalize::Leg;

type Uuid = [u8; 16];

const LEG_COLUMNS: &str =
    "uuid, leg, loopback, start_epoch, answer_epoch, end_epoch, billsec, caller, callee, hangup_cause";

/// The `call_key` of a uuid this transaction has locked but not linked yet (MySQL only; never
/// committed: every uuid a batch names gets its call's key before the commit).
const UNLINKED: Uuid = [0; 16];

/// A leg's text facts cut to what their columns hold, once, so a leg read back from the
/// database sums up the same as the leg that was written.
fn fitted(l: &LegFacts) -> LegFacts {
    LegFacts {
        caller: cut(&l.caller, 255),
        callee: cut(&l.callee, 255),
        hangup_cause: cut(&l.hangup_cause, 64),
        ..l.clone()
    }
}

fn sum_up<'a>(legs: impl Iterator<Item = &'a LegFacts>) -> Option<CallSummary> {
    summarize(&legs.cloned().collect::<Vec<_>>())
}

/// A call's legs that have arrived, as stored: by uuid, each with its `normalized_cdrs` id.
type Arrived = BTreeMap<Uuid, (LegFacts, Option<u64>)>;

impl Store {
    /// Links `legs` to their calls: each joins the call any uuid it names already belongs to
    /// (calls it shows to be one are merged), the uuids it names are registered for legs
    /// still to come, and the calls touched are summed up again. A call's `call_log` row is
    /// dropped when its call id changed or it merged away, and its calllog tasks that ran are
    /// due again, so the call log follows the call as late legs arrive.
    pub(super) async fn link_calls(
        &self,
        tx: &mut AnyConnection,
        legs: &[LegFacts],
        now: Time,
    ) -> Result<(), sqlx::Error> {
        if legs.is_empty() {
            return Ok(());
        }
        let legs: Vec<LegFacts> = legs.iter().map(fitted).collect();
        let named: BTreeSet<Uuid> =
            legs.iter().flat_map(|l| std::iter::once(l.uuid).chain(l.peers.iter().copied())).collect();
        if self.dialect.locks_rows() {
            // Another process may be linking a leg of the same call right now: lock every uuid
            // named (in order, existing or not) before reading, so one of the two waits and
            // then reads what the other wrote. SQLite's writer is alone already.
            let mut qb = QueryBuilder::new("INSERT INTO call_legs (uuid, call_key) ");
            qb.push_values(&named, |mut b, u| {
                b.push_bind(u.to_vec()).push_bind(UNLINKED.to_vec());
            });
            qb.push(" ON DUPLICATE KEY UPDATE uuid = uuid");
            qb.build().execute(&mut *tx).await?;
        }
        // every leg of the calls these uuids already belong to, and its normalized CDR: one
        // round trip (a join, not IN (SELECT …), which MariaDB reads as a scan of call_legs)
        let mut qb = QueryBuilder::new(format!(
            "SELECT l.call_key, l.seen, CAST(n.id AS SIGNED), {} FROM call_legs me \
             JOIN call_legs l ON l.call_key = me.call_key LEFT JOIN normalized_cdrs n ON n.uuid = l.uuid \
             WHERE me.call_key <> ",
            prefixed("l", LEG_COLUMNS)
        ));
        qb.push_bind(UNLINKED.to_vec()).push(" AND me.uuid IN ");
        push_uuids(&mut qb, named.iter().copied());
        qb.push(self.dialect.for_update());
        let mut existing: BTreeMap<Uuid, Uuid> = BTreeMap::new();
        let mut arrived: BTreeMap<Uuid, Arrived> = BTreeMap::new();
        for r in qb.build().fetch_all(&mut *tx).await? {
            let (key, leg) = (uuid(&r, 0), leg_from_row_at(&r, 3));
            if named.contains(&leg.uuid) {
                existing.insert(leg.uuid, key);
            }
            if r.get::<String, _>(1) == "y" {
                let id = r.get::<Option<i64>, _>(2).map(|n| n as u64);
                arrived.entry(key).or_default().insert(leg.uuid, (leg, id));
            }
        }
        let before: BTreeMap<Uuid, CallSummary> =
            arrived.iter().filter_map(|(k, legs)| sum_up(legs.values().map(|l| &l.0)).map(|s| (*k, s))).collect();
        let plan = plan_links(&legs, &existing);
        for call in plan.calls.iter().filter(|c| !c.merged.is_empty()) {
            let mut qb = QueryBuilder::new("UPDATE call_legs SET call_key = ");
            qb.push_bind(call.key.to_vec()).push(" WHERE call_key IN ");
            push_uuids(&mut qb, call.merged.iter().copied());
            qb.build().execute(&mut *tx).await?;
            let mut qb = QueryBuilder::new("DELETE FROM calls WHERE call_key IN ");
            push_uuids(&mut qb, call.merged.iter().copied());
            qb.build().execute(&mut *tx).await?;
        }
        let key_of: BTreeMap<Uuid, Uuid> =
            plan.calls.iter().flat_map(|c| c.members.iter().map(|m| (*m, c.key))).collect();
        self.upsert_legs(tx, &legs, &key_of).await?;
        // each call from the legs it had (its own and those of the calls merged into it) and
        // the batch's, a leg arriving again replacing what it said before; the calls that
        // changed have their earlier legs' calllog tasks due again (a call first seen in this
        // batch has only new tasks; a replay of an unchanged leg changes nothing)
        let mut summaries: Vec<(Uuid, CallSummary)> = Vec::new();
        let mut rearm: Vec<u64> = Vec::new();
        for call in &plan.calls {
            let had: Vec<&Arrived> =
                std::iter::once(&call.key).chain(&call.merged).filter_map(|k| arrived.get(k)).collect();
            let mut its: BTreeMap<Uuid, &LegFacts> =
                had.iter().flat_map(|a| a.values().map(|l| (l.0.uuid, &l.0))).collect();
            its.extend(legs.iter().filter(|l| key_of[&l.uuid] == call.key).map(|l| (l.uuid, l)));
            let Some(now_summary) = sum_up(its.into_values()) else { continue };
            if before.get(&call.key).is_some_and(|b| *b != now_summary) || !call.merged.is_empty() {
                rearm.extend(had.iter().flat_map(|a| a.values().filter_map(|l| l.1)));
            }
            summaries.push((call.key, now_summary));
        }
        self.upsert_calls(tx, &summaries).await?;
        let stale: Vec<Uuid> = before
            .iter()
            .filter(|(key, old)| {
                summaries.iter().find(|(k, _)| k == *key).is_none_or(|(_, s)| s.call_id != old.call_id)
            })
            .map(|(_, old)| old.call_id)
            .collect();
        if !stale.is_empty() {
            let mut qb = QueryBuilder::new("DELETE FROM call_log WHERE uuid IN ");
            push_uuids(&mut qb, stale);
            qb.build().execute(&mut *tx).await?;
        }
        if !rearm.is_empty() {
            // no one's claim any more: an attempt still running must not close it
            let mut qb = QueryBuilder::new("UPDATE tasks SET done = 'n', retry = 0, next_attempt = ");
            qb.push_bind(sql_time(now))
                .push(format!(", {} WHERE task_type = 'calllog' AND id_normalized_cdrs IN ", super::claims::NO_CLAIM));
            push_ids(&mut qb, rearm);
            qb.build().execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Forgets legs (purged): their `call_legs` rows, and the calls left without a leg that
    /// arrived (with the uuids those still named).
    pub(super) async fn unlink_calls(
        &self,
        tx: &mut AnyConnection,
        legs: impl Iterator<Item = Uuid>,
    ) -> Result<(), sqlx::Error> {
        let legs: Vec<Uuid> = legs.collect();
        let mut qb = QueryBuilder::new("SELECT call_key FROM call_legs WHERE uuid IN ");
        push_uuids(&mut qb, legs.iter().copied());
        let keys: BTreeSet<Uuid> = qb.build().fetch_all(&mut *tx).await?.iter().map(|r| uuid(r, 0)).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mut qb = QueryBuilder::new("DELETE FROM call_legs WHERE uuid IN ");
        push_uuids(&mut qb, legs);
        qb.build().execute(&mut *tx).await?;
        let mut qb = QueryBuilder::new("SELECT call_key FROM call_legs WHERE seen = 'y' AND call_key IN ");
        push_uuids(&mut qb, keys.iter().copied());
        let alive: BTreeSet<Uuid> = qb.build().fetch_all(&mut *tx).await?.iter().map(|r| uuid(r, 0)).collect();
        let gone: Vec<Uuid> = keys.difference(&alive).copied().collect();
        if !gone.is_empty() {
            for head in ["DELETE FROM call_legs WHERE call_key IN ", "DELETE FROM calls WHERE call_key IN "] {
                let mut qb = QueryBuilder::new(head);
                push_uuids(&mut qb, gone.iter().copied());
                qb.build().execute(&mut *tx).await?;
            }
        }
        Ok(())
    }

    /// The batch's legs with their facts, and the uuids they name (as not seen yet, unless
    /// their own CDR came first), each under its call's key.
    async fn upsert_legs(
        &self,
        tx: &mut AnyConnection,
        legs: &[LegFacts],
        key_of: &BTreeMap<Uuid, Uuid>,
    ) -> Result<(), sqlx::Error> {
        let mut qb = QueryBuilder::new(format!("INSERT INTO call_legs (call_key, seen, {LEG_COLUMNS}) "));
        qb.push_values(legs, |mut b, l| {
            b.push_bind(key_of[&l.uuid].to_vec())
                .push_bind("y")
                .push_bind(l.uuid.to_vec())
                .push_bind(if l.leg == Leg::B { "B" } else { "A" })
                .push_bind(if l.loopback { "y" } else { "n" })
                .push_bind(l.start)
                .push_bind(l.answer)
                .push_bind(l.end)
                .push_bind(l.billsec)
                .push_bind(l.caller.clone())
                .push_bind(l.callee.clone())
                .push_bind(l.hangup_cause.clone());
        });
        let facts = ["call_key", "seen", "leg", "loopback", "start_epoch", "answer_epoch", "end_epoch", "billsec"];
        let columns: Vec<&str> = facts.into_iter().chain(["caller", "callee", "hangup_cause"]).collect();
        qb.push(self.dialect.upsert("uuid", &columns));
        qb.build().execute(&mut *tx).await?;
        let own: BTreeSet<Uuid> = legs.iter().map(|l| l.uuid).collect();
        let named: Vec<(Uuid, Uuid)> =
            key_of.iter().filter(|(u, _)| !own.contains(*u)).map(|(u, k)| (*u, *k)).collect();
        if !named.is_empty() {
            let mut qb = QueryBuilder::new("INSERT INTO call_legs (uuid, call_key) ");
            qb.push_values(&named, |mut b, (u, k)| {
                b.push_bind(u.to_vec()).push_bind(k.to_vec());
            });
            qb.push(self.dialect.upsert("uuid", &["call_key"]));
            qb.build().execute(&mut *tx).await?;
        }
        Ok(())
    }

    async fn upsert_calls(&self, tx: &mut AnyConnection, calls: &[(Uuid, CallSummary)]) -> Result<(), sqlx::Error> {
        if calls.is_empty() {
            return Ok(());
        }
        let columns: Vec<&str> =
            "call_id, caller, callee, start_epoch, answer_epoch, end_epoch, talk_seconds, answered, hangup_cause, legs"
                .split(", ")
                .collect();
        let mut qb = QueryBuilder::new(format!("INSERT INTO calls (call_key, {}) ", columns.join(", ")));
        qb.push_values(calls, |mut b, (key, s)| {
            b.push_bind(key.to_vec())
                .push_bind(s.call_id.to_vec())
                .push_bind(s.caller.clone())
                .push_bind(s.callee.clone())
                .push_bind(s.start)
                .push_bind(s.answer)
                .push_bind(s.end)
                .push_bind(s.talk_seconds)
                .push_bind(if s.answered { "y" } else { "n" })
                .push_bind(s.hangup_cause.clone())
                .push_bind(s.legs.len() as i64);
        });
        qb.push(self.dialect.upsert("call_key", &columns));
        qb.build().execute(&mut *tx).await?;
        Ok(())
    }

    /// The call a leg belongs to, summed up from its legs; None for a uuid no call knows.
    pub async fn call_of(&self, leg: Uuid) -> StoreResult<Option<CallSummary>> {
        let sql = format!(
            "SELECT l.call_key, {} FROM call_legs l JOIN call_legs me ON me.call_key = l.call_key \
             WHERE me.uuid = ? AND l.seen = 'y'",
            prefixed("l", LEG_COLUMNS)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(leg.to_vec()).fetch_all(&self.pool).await?;
        let legs: Vec<LegFacts> = rows.iter().map(|r| leg_from_row_at(r, 1)).collect();
        Ok(summarize(&legs))
    }
}

/// `a, b` as `t.a, t.b`.
fn prefixed(table: &str, columns: &str) -> String {
    columns.split(", ").map(|c| format!("{table}.{c}")).collect::<Vec<_>>().join(", ")
}

/// A leg's facts from a row whose `LEG_COLUMNS` start at column `at`.
fn leg_from_row_at(r: &AnyRow, at: usize) -> LegFacts {
    let get = |i: usize| r.get::<i64, _>(at + i);
    LegFacts {
        uuid: uuid(r, at),
        peers: Vec::new(),
        leg: if r.get::<String, _>(at + 1) == "B" { Leg::B } else { Leg::A },
        loopback: r.get::<String, _>(at + 2) == "y",
        start: get(3),
        answer: get(4),
        end: get(5),
        billsec: get(6),
        caller: r.get(at + 7),
        callee: r.get(at + 8),
        hangup_cause: r.get(at + 9),
    }
}
