//! `calls` and `call_legs`: one record per call, linked inside the transaction that commits
//! its legs (the distilleries' batch, or a replay), whatever order the legs arrive in.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, QueryBuilder, Row};

use super::columns::{cut, sql_time, uuid};
use super::{Store, StoreResult, Time};
use crate::domain::calls::{plan_links, summarize, CallSummary, LegFacts};
use crate::domain::normalize::Leg;

type Uuid = [u8; 16];

/// Appends `(?, ?, …)` binding each uuid.
fn push_uuids(qb: &mut QueryBuilder<sqlx::Any>, uuids: impl IntoIterator<Item = Uuid>) {
    qb.push("(");
    let mut sep = qb.separated(", ");
    for u in uuids {
        sep.push_bind(u.to_vec());
    }
    sep.push_unseparated(")");
}

const LEG_COLUMNS: &str =
    "uuid, leg, loopback, start_epoch, answer_epoch, end_epoch, billsec, caller, callee, hangup_cause";

/// A call as its `calls` row holds it, to tell whether a call changed.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    call_id: Uuid,
    caller: String,
    callee: String,
    times: [i64; 4],
    hangup_cause: String,
    legs: usize,
}

impl Stored {
    fn of(s: &CallSummary) -> Stored {
        Stored {
            call_id: s.call_id,
            caller: cut(&s.caller, 255),
            callee: cut(&s.callee, 255),
            times: [s.start, s.answer, s.end, s.talk_seconds],
            hangup_cause: cut(&s.hangup_cause, 64),
            legs: s.legs.len(),
        }
    }
}

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
        let named: BTreeSet<Uuid> =
            legs.iter().flat_map(|l| std::iter::once(l.uuid).chain(l.peers.iter().copied())).collect();
        // every leg of the calls these uuids already belong to: one round trip
        // (a join, not IN (SELECT …), which MariaDB reads as a scan of call_legs)
        let mut qb = QueryBuilder::new(format!(
            "SELECT l.call_key, l.seen, {} FROM call_legs me JOIN call_legs l ON l.call_key = me.call_key \
             WHERE me.uuid IN ",
            prefixed("l", LEG_COLUMNS)
        ));
        push_uuids(&mut qb, named.iter().copied());
        let mut existing: BTreeMap<Uuid, Uuid> = BTreeMap::new();
        let mut arrived: BTreeMap<Uuid, BTreeMap<Uuid, LegFacts>> = BTreeMap::new();
        for r in qb.build().fetch_all(&mut *tx).await? {
            let (key, leg) = (uuid(&r, 0), leg_from_row_at(&r, 2));
            if named.contains(&leg.uuid) {
                existing.insert(leg.uuid, key);
            }
            if r.get::<String, _>(1) == "y" {
                arrived.entry(key).or_default().insert(leg.uuid, leg);
            }
        }
        let before: BTreeMap<Uuid, CallSummary> = arrived
            .iter()
            .filter_map(|(k, legs)| summarize(&legs.values().cloned().collect::<Vec<_>>()).map(|s| (*k, s)))
            .collect();
        let plan = plan_links(legs, &existing);
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
        self.upsert_legs(tx, legs, &key_of).await?;
        // each call from the legs it had (its own and those of the calls merged into it) and
        // the batch's, a leg arriving again replacing what it said before
        let summaries: Vec<(Uuid, CallSummary)> = plan
            .calls
            .iter()
            .filter_map(|call| {
                let its: BTreeMap<Uuid, &LegFacts> = std::iter::once(&call.key)
                    .chain(&call.merged)
                    .filter_map(|k| arrived.get(k))
                    .flat_map(|legs| legs.values())
                    .chain(legs.iter().filter(|l| key_of[&l.uuid] == call.key))
                    .map(|l| (l.uuid, l))
                    .collect();
                let its: Vec<LegFacts> = its.into_values().cloned().collect();
                summarize(&its).map(|s| (call.key, s))
            })
            .collect();
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
        // the calls that changed (a replay of an unchanged leg changes none; a call first seen
        // in this batch has only new tasks): their call log is written again — also by a task
        // running now, which may have read the call before
        let changed: Vec<Uuid> = summaries
            .iter()
            .filter(|(k, s)| before.get(k).is_some_and(|b| Stored::of(b) != Stored::of(s)))
            .map(|(k, _)| *k)
            .collect();
        if !changed.is_empty() {
            let mut qb = QueryBuilder::new("UPDATE tasks SET done = 'n', retry = 0, next_attempt = ");
            qb.push_bind(sql_time(now)).push(
                " WHERE task_type = 'calllog' AND id_normalized_cdrs IN \
                 (SELECT n.id FROM normalized_cdrs n JOIN call_legs l ON l.uuid = n.uuid WHERE l.call_key IN ",
            );
            push_uuids(&mut qb, changed);
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
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
                .push_bind(cut(&l.caller, 255))
                .push_bind(cut(&l.callee, 255))
                .push_bind(cut(&l.hangup_cause, 64));
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
                .push_bind(cut(&s.caller, 255))
                .push_bind(cut(&s.callee, 255))
                .push_bind(s.start)
                .push_bind(s.answer)
                .push_bind(s.end)
                .push_bind(s.talk_seconds)
                .push_bind(if s.answered { "y" } else { "n" })
                .push_bind(cut(&s.hangup_cause, 64))
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
